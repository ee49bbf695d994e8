"""The code identity of a plugin: part of every artifact it builds.

A recipe step's fingerprint hashes the source of the plugin module that defines
its stage, the plugin modules and ``slimlab.kit`` modules that module uses (and
the modules those use), and the version of the distribution that installed it.
The workflow passes the fingerprint as a rule param, so editing a stage's code
or upgrading its package reruns what it built and, through the changed files,
everything below it. Nothing else reruns: the host's own modules are not part
of any stage's identity.
"""

import hashlib
import inspect
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

from slimlab import registry

_KIT = "slimlab.kit."
_BUILTINS = "slimlab.plugins."


def module_of(obj) -> ModuleType:
    """The module that defines a registered object (a function, a class, an instance or a partial)."""
    target = getattr(obj, "func", obj)  # functools.partial
    name = getattr(target, "__module__", None) or type(target).__module__
    return sys.modules[name]


def _owned(module: ModuleType, root: ModuleType) -> bool:
    """Modules that count towards ``root``'s identity: the kit, and plugin code of the same package."""
    name, top = module.__name__, root.__name__
    if name.startswith(_KIT):
        return True
    if top.startswith(_BUILTINS):
        return name.startswith(_BUILTINS)
    return name.split(".")[0] == top.split(".")[0] and not name.startswith("slimlab.")


def _used_modules(module: ModuleType) -> set[ModuleType]:
    found = set()
    for value in vars(module).values():
        used = value if isinstance(value, ModuleType) else sys.modules.get(getattr(value, "__module__", "") or "")
        if used is not None:
            found.add(used)
    return found


def closure(root: ModuleType) -> list[ModuleType]:
    """``root`` and every module it owns, transitively, by name."""
    seen, todo = {root.__name__: root}, [root]
    while todo:
        for used in _used_modules(todo.pop()):
            if used.__name__ not in seen and _owned(used, root):
                seen[used.__name__] = used
                todo.append(used)
    return [seen[name] for name in sorted(seen)]


@cache
def _module_digest(module: ModuleType) -> str:
    path = getattr(module, "__file__", None)
    source = Path(path).read_bytes() if path and Path(path).is_file() else inspect.getsource(module).encode()
    return hashlib.sha256(source).hexdigest()


def fingerprint(*objects) -> str:
    """A short hash of the code behind ``objects`` (and the distributions that installed it)."""
    digest = hashlib.sha256()
    for module in sorted({m for obj in objects for m in closure(module_of(obj))}, key=lambda m: m.__name__):
        digest.update(f"{module.__name__}:{_module_digest(module)}\n".encode())
        dist = registry.distribution_of(module.__name__)
        if dist is not None:
            digest.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
    return digest.hexdigest()[:16]
