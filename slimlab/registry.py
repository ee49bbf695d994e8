"""The plugin manager and the registries that plugins fill.

Loading order, as in llm and datasette: the ``slimlab`` entry-point group, then
user plugin files in the plugins folder, then the built-ins, then
``check_pending()`` so that a misspelt hook fails loudly.
"""

import importlib
import inspect
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
from functools import cache
from pathlib import Path

import pluggy
import pydantic

from slimlab import hookspecs
from slimlab.errors import PluginError

ENTRY_POINT_GROUP = "slimlab"

# plugin name -> the distribution that installed it, for ``slimlab plugins``
_distributions: dict[str, importlib.metadata.Distribution] = {}


def builtin_plugins() -> list[str]:
    """Every module of the ``slimlab.plugins`` package (the repo's ``plugins/`` folder)."""
    import slimlab.plugins

    return sorted(f"slimlab.plugins.{m.name}" for m in pkgutil.iter_modules(slimlab.plugins.__path__))


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
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} (entry point {ep.value}) failed to import: {exc}") from exc
        _register(pm, plugin, ep.name)
        if ep.dist is not None:
            _distributions[ep.name] = ep.dist


def _load_plugin_files(pm: pluggy.PluginManager, folder: Path) -> None:
    builtin_stems = {name.rsplit(".", 1)[1] for name in builtin_plugins()}
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.py")):
        # The repo's plugins/ folder holds the built-ins too; they load below as built-ins.
        if path.stem.startswith("_") or path.stem in builtin_stems:
            continue
        module_name = f"slimlab_user_plugins.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise PluginError(f"plugin file {path} failed to import: {exc}") from exc
        sys.modules[module_name] = module
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


def _collect(hook_name: str, what: str) -> dict:
    """Call one ``register_*`` hook and gather ``name -> thing``, refusing duplicate names."""
    pm = plugin_manager()
    found: dict = {}
    owners: dict = {}
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        owner = impl.plugin_name

        def register(name_or_obj, obj=None, _owner=owner):
            name, thing = (name_or_obj.name, name_or_obj) if obj is None else (name_or_obj, obj)
            if name in found:
                raise PluginError(f"{what} {name!r} is registered by both {owners[name]!r} and {_owner!r}")
            found[name], owners[name] = thing, _owner

        impl.function(register=register)
    return found


@cache
def stages() -> dict:
    return _collect("register_stages", "stage")


@cache
def datasets() -> dict:
    return _collect("register_datasets", "data set")


@cache
def models() -> dict:
    return _collect("register_models", "model")


@cache
def transports() -> dict:
    return _collect("register_transports", "transport")


@cache
def runners() -> dict:
    return _collect("register_runners", "runner")


@cache
def energy_probes() -> dict:
    return _collect("register_energy_probes", "energy probe")


def lookup(table: dict, name: str, what: str):
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise PluginError(f"unknown {what} {name!r}; registered: {known}") from None


def check_model(name: str, params: dict) -> None:
    """Raise ValueError unless ``name`` is a registered model whose builder takes ``params`` with these types."""
    build = models().get(name)
    if build is None:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(models()))}")
    signature = inspect.signature(build)
    try:
        signature.bind(None, None, **params)
    except TypeError as exc:
        raise ValueError(f"model_params do not fit model {name!r}: {exc}") from None
    for key, value in params.items():
        annotation = signature.parameters[key].annotation
        if annotation is not inspect.Parameter.empty:
            try:
                pydantic.TypeAdapter(annotation).validate_python(value)
            except pydantic.ValidationError as exc:
                raise ValueError(f"model_params.{key} of model {name!r}: {exc.errors()[0]['msg']}") from None


def describe_plugins() -> list[dict]:
    """What ``slimlab plugins`` prints: name, version and hooks of each loaded plugin."""
    pm = plugin_manager()
    rows = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        dist = _distributions.get(name)
        version = dist.version if dist else (None if name.endswith(".py") else _own_version())
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin))
        rows.append({"name": name, "version": version, "hooks": hooks})
    return sorted(rows, key=lambda row: row["name"])


def _own_version() -> str:
    from slimlab import __version__

    return __version__
