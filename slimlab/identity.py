"""The code identity of a plugin: part of every artifact it builds.

A recipe step's fingerprint hashes the source of the plugin module that defines
its stage, the plugin modules and ``slimlab.kit`` modules it imports (anywhere in
the file, a function body included, and the modules those import), and the
version of the distribution that installed it. The workflow passes the
fingerprint as a rule param, so editing a stage's code or upgrading its package
reruns what it built and, through the changed files, everything below it.
Nothing else reruns: the host's own modules are not part of any stage's identity.
"""

import ast
import hashlib
import importlib.util
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
