"""The plugin manager and the registries that plugins fill.

Loading order, as in llm and datasette: the ``slimlab`` entry-point group, then
user plugin files in the plugins folder, then the built-ins, then
``check_pending()`` so that a misspelt hook fails loudly.
"""

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from functools import cache, partial
from pathlib import Path

import pluggy

import slimlab.plugins
from slimlab import __version__, hookspecs
from slimlab.errors import PluginError

ENTRY_POINT_GROUP = "slimlab"

# plugin name -> the distribution that installed it, for ``slimlab plugins`` and code identity
_distributions: dict[str, importlib.metadata.Distribution] = {}


def builtin_plugins() -> list[str]:
    """Every module under the ``slimlab.plugins`` package (the repo's ``plugins/`` folder), by kind."""
    found = pkgutil.walk_packages(slimlab.plugins.__path__, prefix="slimlab.plugins.")
    return sorted(module.name for module in found if not module.ispkg)


def plugins_dir() -> Path:
    """User plugin files: ``$SLIMLAB_PLUGINS_DIR``, else ``plugins/`` in the working directory."""
    return Path(os.environ.get("SLIMLAB_PLUGINS_DIR", "plugins"))


def _register(pm: pluggy.PluginManager, plugin, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} does not fit slimlab's hooks: {exc}") from exc


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = ep.load()
        except Exception as exc:  # any import-time failure of a third-party plugin: named, not a traceback
            raise PluginError(f"plugin {ep.name!r} (entry point {ep.value}) failed to import: {exc}") from exc
        _register(pm, plugin, ep.name)
        if ep.dist is not None:
            _distributions[ep.name] = ep.dist


def _builtin_files() -> set[Path]:
    """The built-ins' source files: the repo's plugins/ folder holds them too, and they load as built-ins."""
    specs = (importlib.util.find_spec(name) for name in builtin_plugins())
    return {Path(spec.origin).resolve() for spec in specs if spec and spec.origin}


def _load_plugin_files(pm: pluggy.PluginManager, folder: Path) -> None:
    if not folder.is_dir():
        return
    builtins = _builtin_files()
    for path in sorted(folder.rglob("*.py")):
        if path.name.startswith("_") or path.resolve() in builtins:
            continue
        relative = path.relative_to(folder).with_suffix("")
        module_name = "slimlab_user_plugins." + ".".join(relative.parts)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # a user's plugin file may fail in any way: named, not a traceback
            del sys.modules[module_name]
            raise PluginError(f"plugin file {path} failed to import: {exc}") from exc
        _register(pm, module, str(path))


@cache
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("slimlab")
    pm.add_hookspecs(hookspecs)
    _load_entry_points(pm)
    _load_plugin_files(pm, plugins_dir())
    for name in builtin_plugins():
        _register(pm, importlib.import_module(name), name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {pm.get_name(exc.plugin)!r} implements an unknown hook: {exc}") from exc
    return pm


@cache
def _collect(hook_name: str, what: str) -> dict:
    """Call one ``register_*`` hook and gather ``thing.name -> thing``, refusing duplicate names."""
    pm = plugin_manager()
    found: dict = {}
    owners: dict = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        owner = impl.plugin_name

        def register(thing, _owner=owner):
            name = getattr(thing, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {_owner!r} registered a {what} without a name: {thing!r}")
            if name in found:
                raise PluginError(f"{what} {name!r} is registered by both {owners[name]!r} and {_owner!r}")
            found[name], owners[name] = thing, _owner

        impl.function(register=register)
    return found


@cache
def stages() -> dict:
    """Every registered stage, and every format's ``convert.<format>`` stage."""
    found = dict(_collect("register_stages", "stage"))
    for fmt in formats().values():
        if fmt.converter is not None:
            if fmt.converter.name in found:
                raise PluginError(f"stage {fmt.converter.name!r} is registered twice: by format {fmt.name!r} and by a stage plugin")
            found[fmt.converter.name] = fmt.converter
    return found


# The other registries, one per hook: name -> the registered thing.
formats = partial(_collect, "register_formats", "format")
datasets = partial(_collect, "register_datasets", "data set")
models = partial(_collect, "register_models", "model")
transports = partial(_collect, "register_transports", "transport")
runners = partial(_collect, "register_runners", "runner")
energy_probes = partial(_collect, "register_energy_probes", "energy probe")


def lookup(table: dict, name: str, what: str):
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise PluginError(f"unknown {what} {name!r}; registered: {known}") from None


def distribution_of(module_name: str) -> importlib.metadata.Distribution | None:
    """The installed distribution of an entry-point plugin's module (None for built-ins and plugin files)."""
    plugin_manager()
    top = module_name.split(".")[0]
    for name, dist in _distributions.items():
        entry = next((ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP and ep.name == name), None)
        if entry is not None and entry.module.split(".")[0] == top:
            return dist
    return None


def describe_plugins() -> list[dict]:
    """What ``slimlab plugins`` prints: name, version and hooks of each loaded plugin."""
    pm = plugin_manager()
    rows = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        dist = _distributions.get(name)
        version = dist.version if dist else (None if name.endswith(".py") else __version__)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin))
        rows.append({"name": name, "version": version, "hooks": hooks})
    return sorted(rows, key=lambda row: row["name"])
