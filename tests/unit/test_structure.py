"""The structure the README promises: documented hooks, one-way imports, small files."""

import ast
import inspect
import re
from pathlib import Path

import pytest

from slimlab import hookspecs
from tests.support import REPO

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
# The parts of the host that sit on top of the kit and the lab: they may import both.
TOP = {"slimlab/cli.py", "slimlab/workflow.py", "slimlab/zygote.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def test_the_hooks_are_the_seven_kinds():
    assert set(HOOKS) == {"register_stages", "register_formats", "register_datasets", "register_models",
                          "register_transports", "register_runners", "register_energy_probes"}


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


def test_the_payload_imports_nothing_of_slimlab_and_bench_nothing_of_tests():
    for path in sources("devices/payload"):
        assert not {m for m in imported_modules(path) if m.split(".")[0] == "slimlab"}, path
    for path in sources("bench"):
        assert not {m for m in imported_modules(path) if m.split(".")[0] == "tests"}, path


def test_no_source_file_outside_tests_is_over_400_lines():
    for folder in ("slimlab", "plugins", "devices", "bench"):
        for path in sources(folder):
            assert len(path.read_text().splitlines()) <= 400, f"{path.relative_to(REPO)} is over 400 lines"
