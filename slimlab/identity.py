"""The code identity of a plugin: part of every artifact it builds.

A recipe step's fingerprint hashes the source of the plugin module that defines
its stage, the plugin modules and ``slimlab.kit`` modules it imports (anywhere in
the file, a function body included, and the modules those import), and the
version of the distribution that installed it. The workflow passes the
fingerprint as a rule param, so editing a stage's code or upgrading its package
reruns what it built and, through the changed files, everything below it.
Nothing else reruns: the host's own modules are not part of any stage's identity.

The *environment* (:func:`environment`) is the rest of what decides whether a step
can run: the Python, the installed distributions and the loaded plugins. It is not
part of any artifact's identity (upgrading numpy rebuilds nothing), but a failed
step records it, and the workflow retries a failure whose environment has changed
since (a missing converter installed, a broken plugin removed).
"""

import ast
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import site
import sys
from functools import cache
from pathlib import Path

from slimlab import registry

_KIT = "slimlab.kit"
_BUILTINS = "slimlab.plugins."


def module_name_of(obj) -> str:
    """The module that defines a registered object (a function, a class, an instance or a partial)."""
    target = getattr(obj, "func", obj)  # functools.partial
    return getattr(target, "__module__", None) or type(target).__module__


def _owned(name: str, root: str) -> bool:
    """Modules that count towards ``root``'s identity: the kit, and plugin code of the same package."""
    if name == _KIT or name.startswith(_KIT + "."):
        return True
    if root.startswith(_BUILTINS):
        return name.startswith(_BUILTINS)
    return name.split(".")[0] == root.split(".")[0] and not name.startswith("slimlab.")


@cache
def _source(name: str) -> tuple[bytes, bool]:
    """A module's source, and whether it is a package (whose relative imports resolve inside it)."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if path is None:
        spec = importlib.util.find_spec(name)
        path = spec.origin if spec else None
    if not path or not Path(path).is_file():
        return b"", False
    return Path(path).read_bytes(), Path(path).name == "__init__.py"


def _imports(name: str) -> set[str]:
    """Every module ``name``'s source imports, at the top or inside a function."""
    source, package = _source(name)
    base = name if package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source or b"")):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parent = base.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (parent, node.module or "") if part)
            found.add(module)
            # `from slimlab.kit import training` names a module, not an attribute. Only owned packages are
            # looked into: finding a submodule imports its parents (tensorflow would take seconds).
            if _owned(module, name):
                found |= {f"{module}.{alias.name}" for alias in node.names if _is_module(f"{module}.{alias.name}")}
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # the parent is a module, not a package
        return False


def closure(root: str) -> list[str]:
    """``root`` and every module it owns, transitively, by name."""
    seen, todo = {root}, [root]
    while todo:
        for used in _imports(todo.pop()):
            if used not in seen and _owned(used, root) and _source(used)[0]:
                seen.add(used)
                todo.append(used)
    return sorted(seen)


def fingerprint(*objects) -> str:
    """A short hash of the code behind ``objects`` (and the distributions that installed it)."""
    digest = hashlib.sha256()
    for name in sorted({m for obj in objects for m in closure(module_name_of(obj))}):
        digest.update(f"{name}:{hashlib.sha256(_source(name)[0]).hexdigest()}\n".encode())
        dist = registry.distribution_of(name)
        if dist is not None:
            digest.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
    return digest.hexdigest()[:16]


def _search_path() -> list[str]:
    """Where installed distributions live: ``$PYTHONPATH`` and the site-packages folders. Not the rest of
    ``sys.path``, whose first entries differ between processes of one environment (snakemake puts the
    Snakefile's folder there, a console script its own folder)."""
    entries = [*os.environ.get("PYTHONPATH", "").split(os.pathsep), *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        entries.append(site.getusersitepackages())
    found = []
    for entry in filter(None, entries):
        path = os.path.realpath(entry)
        if path not in found and os.path.isdir(path):
            found.append(path)
    return found


_HEADER = re.compile(r"^(Name|Version):[ \t]*(.*?)\s*$", re.M)


def _installed() -> set[str]:
    """``name==version`` of every installed distribution. The metadata's header is read with a regex:
    importlib.metadata's email parser takes 15 times as long (75 ms for 126 distributions)."""
    found = set()
    for dist in importlib.metadata.distributions(path=_search_path()):
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        header = dict(_HEADER.findall(text.split("\n\n", 1)[0]))
        name = re.sub(r"[-_.]+", "-", header.get("Name", "")).lower()
        found.add(f"{name}=={header.get('Version', '')}")
    return found


def _plugins() -> list[str]:
    """Each plugin, loaded or skipped, with its version; a user plugin file with its content's hash."""
    lines = []
    for row in registry.describe_plugins():
        path = Path(row["name"])
        content = hashlib.sha256(path.read_bytes()).hexdigest() if row["name"].endswith(".py") and path.is_file() \
            else ""
        lines.append(f"{row['name']}=={row['version']} {'skipped' if 'skipped' in row else 'loaded'} {content}")
    return lines


@cache
def environment() -> str:
    """A short hash of what decides whether a step can run besides its own code and params: the Python (its
    version, interpreter and prefix), every installed distribution and its version, and the plugins (loaded or
    skipped, their versions, and the content of user plugin files). Once per process: ~10 ms."""
    digest = hashlib.sha256()
    python = f"python {sys.implementation.name} {sys.version} {os.path.realpath(sys.executable)} {sys.prefix}"
    for line in [python, *sorted(_installed()), *_plugins()]:
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()[:16]
