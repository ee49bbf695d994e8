"""The structure the README promises: documented hooks, one-way imports, small files."""

import ast
import inspect
import re
import tomllib
from pathlib import Path

import pytest

from slimlab import hookspecs
from tests.support import REPO

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
# The parts of the host that sit on top of the kit and the lab: they may import both.
TOP = {"slimlab/api.py", "slimlab/cli.py", "slimlab/nightly.py", "slimlab/workflow.py", "slimlab/zygote.py"}


def imported_modules(path: Path) -> set[str]:
    return imported_modules_of(ast.parse(path.read_text()))


def sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def test_the_hooks_are_the_eight_kinds():
    assert set(HOOKS) == {"register_stages", "register_formats", "register_datasets", "register_models",
                          "register_transports", "register_runners", "register_energy_probes", "register_tasks"}


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_readme_section_with_an_example(hook):
    readme = (REPO / "README.md").read_text()
    section = re.search(rf"^### `{hook}`\n(.*?)(?=^##)", readme, re.S | re.M)
    assert section, f"README.md has no '### `{hook}`' section"
    assert f"def {hook}(register):" in section.group(1) and "register(" in section.group(1)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_by_a_test_plugin(hook):
    implemented = [path for path in (REPO / "tests").rglob("*.py") if f"def {hook}(register" in path.read_text()]
    assert implemented, f"no plugin under tests/ implements {hook}"


def test_the_host_imports_neither_the_kit_nor_the_lab():
    for path in sources("slimlab"):
        relative = str(path.relative_to(REPO))
        if relative in TOP or relative.startswith(("slimlab/kit/", "slimlab/lab/")):
            continue
        wrong = {m for m in imported_modules(path) if m.startswith(("slimlab.kit", "slimlab.lab"))}
        assert not wrong, f"{relative} imports {sorted(wrong)}"


def test_the_kit_does_not_import_the_lab_nor_the_lab_the_kit():
    for folder, other in (("slimlab/kit", "slimlab.lab"), ("slimlab/lab", "slimlab.kit")):
        for path in sources(folder):
            wrong = {m for m in imported_modules(path) if m.startswith(other)}
            assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"


def test_neither_the_kit_nor_the_lab_imports_the_top():
    top = {path.removesuffix(".py").replace("/", ".") for path in TOP}
    for folder in ("slimlab/kit", "slimlab/lab"):
        for path in sources(folder):
            wrong = {m for m in imported_modules(path) if m in top or m.rsplit(".", 1)[0] in top}
            assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"


def test_the_lab_peers_are_outside_the_product():
    """labpeers/ (emulated devices that the tests and bench/ drive) is not installed, and what is installed
    does not import it; the peers import neither slimlab nor the tests."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not [package for package in setuptools["packages"] if package.split(".")[0] == "labpeers"]
    assert "labpeers" not in setuptools["package-dir"]
    for folder in ("slimlab", "plugins", "devices"):
        for path in sources(folder):
            assert not {m for m in imported_modules(path) if m.split(".")[0] == "labpeers"}, path
    assert sources("labpeers")
    for path in sources("labpeers"):
        assert not {m for m in imported_modules(path) if m.split(".")[0] in ("slimlab", "tests")}, path


def test_the_payload_imports_nothing_of_slimlab_and_bench_nothing_of_tests():
    for path in sources("devices/payload"):
        assert not {m for m in imported_modules(path) if m.split(".")[0] == "slimlab"}, path
    for path in sources("bench"):
        assert not {m for m in imported_modules(path) if m.split(".")[0] == "tests"}, path


def test_no_source_file_outside_tests_is_over_400_lines():
    for folder in ("slimlab", "plugins", "devices", "bench", "labpeers"):
        for path in sources(folder):
            assert len(path.read_text().splitlines()) <= 400, f"{path.relative_to(REPO)} is over 400 lines"


# Each package folder and the module name its files import as.
PACKAGES = {"slimlab": "slimlab", "plugins": "slimlab.plugins", "devices/payload": "slimlab_payload",
            "labpeers": "labpeers"}


def runtime_imports(path: Path) -> set[str]:
    """What a module imports when it runs, anywhere in it (function bodies too), but not for type checkers."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            node.body = []
    return imported_modules_of(tree)


def imported_modules_of(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def test_no_module_imports_one_that_imports_it_back():
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sources(folder):
            parts = [part for part in path.relative_to(REPO / folder).with_suffix("").parts if part != "__init__"]
            modules[".".join([package, *parts])] = path
    graph = {name: {m for m in runtime_imports(path) if m in modules and m != name} for name, path in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            current = stack.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                stack.extend(graph[current])
        return False

    cycles = sorted(f"{a} -> {b} -> ... -> {a}" for a in graph for b in graph[a] if reaches(b, a))
    assert not cycles, cycles


def test_every_type_of_the_public_api_states_its_contract():
    import slimlab.api

    for name in slimlab.api.__all__:
        found = getattr(slimlab.api, name)
        if not isinstance(found, type):
            continue
        assert (found.__doc__ or "").strip(), f"slimlab.api.{name} has no docstring"
        for method in getattr(found, "__abstractmethods__", ()):
            assert (getattr(found, method).__doc__ or "").strip(), f"slimlab.api.{name}.{method} has no docstring"
