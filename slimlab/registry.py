"""The plugin manager and the registries that plugins fill.

Loading order, as in llm and datasette: the ``slimlab`` entry-point group, then
user plugin files in the plugins folder, then the built-ins.

A broken plugin does not stop the others (as in tox 4 and datasette): it is skipped,
with one ``slimlab: warning:`` line on stderr that names it, its distribution and
the error, and everything else loads. A plugin is broken if it fails to import, its
hooks do not fit slimlab's (a wrong signature, a misspelt hook name), one of its
``register_*`` hooks raises or calls ``register`` wrongly, or it registers a name
that is already taken. Skipped means it contributes nothing: every hook of every
plugin runs once, on the first use of any registry, and a plugin's registrations
are kept only if all its hooks ran cleanly, so a run never uses half a plugin. A
config that names something no loaded plugin registered fails with one line that
names the skipped plugins (:func:`lookup`); ``slimlab plugins`` lists them with why.

Names: the built-ins are collected first and keep theirs, so a plugin that registers
a name a built-in has is skipped; of two plugins that register one name, the one
loaded later is skipped, and its warning names both. The built-ins are slimlab's own
code: a failure of one is a bug in slimlab, and fatal.
"""

import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import re
import reprlib
import sys
from functools import cache, partial
from pathlib import Path

import pluggy

import slimlab.plugins
from slimlab import __version__, hookspecs
from slimlab.errors import PluginError

ENTRY_POINT_GROUP = "slimlab"

# hook -> what it registers, as errors name it
KINDS = {"register_stages": "stage", "register_formats": "format", "register_datasets": "data set",
         "register_models": "model", "register_transports": "transport", "register_runners": "runner",
         "register_energy_probes": "energy probe", "register_tasks": "task"}

# plugin name -> the distribution that installed it, for ``slimlab plugins`` and code identity
_distributions: dict[str, importlib.metadata.Distribution] = {}
# plugin name -> its distribution (if any) and why it was skipped, for ``slimlab plugins`` and lookup's errors
_skipped: dict[str, tuple[importlib.metadata.Distribution | None, str]] = {}


def builtin_plugins() -> list[str]:
    """Every module under the ``slimlab.plugins`` package (the repo's ``plugins/`` folder), by kind."""
    found = pkgutil.walk_packages(slimlab.plugins.__path__, prefix="slimlab.plugins.")
    return sorted(module.name for module in found if not module.ispkg)


def plugins_dir() -> Path:
    """User plugin files: ``$SLIMLAB_PLUGINS_DIR``, else ``plugins/`` in the working directory."""
    return Path(os.environ.get("SLIMLAB_PLUGINS_DIR", "plugins"))


def _label(name: str, dist: importlib.metadata.Distribution | None) -> str:
    return f"plugin {name!r} ({dist.metadata['Name']} {dist.version})" if dist else f"plugin {name!r}"


def _error(exc: BaseException) -> str:
    """An exception as one line: a PluginError's own message, else ``Type: first line``."""
    first = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, PluginError):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _skip(name: str, reason: str, dist: importlib.metadata.Distribution | None = None) -> None:
    """Leave a plugin out, with its warning line (once per process: every caller runs under a cache)."""
    _skipped[name] = (dist, reason)
    print(f"slimlab: warning: {_label(name, dist)} skipped: {reason}", file=sys.stderr)


def _reject(pm: pluggy.PluginManager, name: str, reason: str) -> None:
    """Unregister a broken plugin and skip it; a broken built-in is slimlab's bug: fatal."""
    if name in builtin_plugins():
        raise PluginError(f"built-in plugin {name!r} is broken: {reason}")
    pm.unregister(name=name)
    _skip(name, reason, _distributions.pop(name, None))


def _register(pm: pluggy.PluginManager, plugin, name: str, dist: importlib.metadata.Distribution | None = None) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        _skip(name, f"its hooks do not fit slimlab's: {'; '.join(str(exc).splitlines())}", dist)
    except ValueError:  # pluggy: the name or the module is taken
        _skip(name, f"already loaded as plugin {pm.get_name(plugin) or name!r}", dist)
    else:
        if dist is not None:
            _distributions[name] = dist


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = ep.load()
        except Exception as exc:  # any import-time failure of a third-party plugin: named, not a traceback
            _skip(ep.name, f"failed to import {ep.value}: {_error(exc)}", ep.dist)
            continue
        _register(pm, plugin, ep.name, ep.dist)


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
            _skip(str(path), f"failed to import: {_error(exc)}")
            continue
        _register(pm, module, str(path))


def _drop_unknown_hooks(pm: pluggy.PluginManager) -> None:
    """pluggy's ``check_pending`` finds a misspelt hook name; each plugin that has one is skipped."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            unknown = sorted(caller.name for caller in pm.get_hookcallers(exc.plugin) if not caller.has_spec())
            hints = [f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, KINDS, 1))
                     else name for name in unknown]
            _reject(pm, pm.get_name(exc.plugin), f"unknown hook {', '.join(hints)}")


@cache
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("slimlab")
    pm.add_hookspecs(hookspecs)
    _load_entry_points(pm)
    _load_plugin_files(pm, plugins_dir())
    for name in builtin_plugins():
        pm.register(importlib.import_module(name), name=name)  # slimlab's own: a failure is a bug, not skipped
    _drop_unknown_hooks(pm)
    return pm


def _example(hook: str, args: tuple) -> str:
    """The hook's own ``register(...)`` example (its hookspec's docstring), with the name an old-style
    ``register(name, thing)`` gave."""
    found = re.search(r"``(register\(.*?\))``", getattr(hookspecs, hook).__doc__ or "")
    example = found.group(1) if found else "register(thing)"
    return example.replace("(name,", f'("{args[0]}",', 1) if args and isinstance(args[0], str) else example


def _short(value) -> str:
    """A function or class by its name, anything else by a short repr: for a one-line ``got register(...)``."""
    return getattr(value, "__qualname__", None) or reprlib.repr(value)


def _call(function, hook: str, found: dict) -> None:
    """Run one plugin's ``hook`` into ``found`` (name -> thing); PluginError if it raises or misuses register."""
    problems = []

    def register(*args, **kwargs):
        name = getattr(args[0], "name", None) if len(args) == 1 and not kwargs else None
        if not isinstance(name, str) or not name:
            call = ", ".join([*map(_short, args), *(f"{key}={_short(value)}" for key, value in kwargs.items())])
            problems.append(f"register() takes one object that carries its own .name, e.g. {_example(hook, args)}; "
                            f"got register({call})")
        elif name in found:
            problems.append(f"it registers {KINDS[hook]} {name!r} twice")
        else:
            found[name] = args[0]
            return
        raise PluginError(problems[-1])

    try:
        function(register=register)
    except Exception as exc:
        problems.append(_error(exc))
    if problems:  # the first one: a hook that catches register's error is broken all the same
        raise PluginError(f"{hook} failed: {problems[0]}")


def _provided(pm: pluggy.PluginManager, plugin) -> dict[str, dict]:
    """Everything one plugin registers, hook -> name -> thing; its formats' ``convert.<format>`` stages among its
    stages."""
    provided: dict[str, dict] = {}
    for caller in pm.get_hookcallers(plugin):
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                _call(impl.function, caller.name, provided.setdefault(caller.name, {}))
    for fmt in provided.get("register_formats", {}).values():
        converter = getattr(fmt, "converter", None)
        if converter is not None:
            stages = provided.setdefault("register_stages", {})
            if converter.name in stages:
                raise PluginError(f"stage {converter.name!r} is registered twice: by format {fmt.name!r} "
                                  "and by register_stages")
            stages[converter.name] = converter
    return provided


@cache
def _registries() -> dict[str, dict]:
    """Every hook's ``name -> thing``, every plugin's hooks run once: the built-ins first, so they keep their
    names, then the others in load order; a plugin whose hooks do not all run cleanly is skipped whole."""
    pm = plugin_manager()
    builtins = set(builtin_plugins())
    tables: dict[str, dict] = {hook: {} for hook in KINDS}
    owners: dict[tuple[str, str], str] = {}
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0] not in builtins):
        try:
            provided = _provided(pm, plugin)
        except Exception as exc:  # a PluginError from its hooks, or a format whose converter is not a stage
            _reject(pm, name, _error(exc))
            continue
        taken = next(((hook, thing) for hook, things in provided.items() for thing in things
                      if thing in tables[hook]), None)
        if taken:
            owner = owners[taken]
            _reject(pm, name, f"{KINDS[taken[0]]} {taken[1]!r} is already registered by "
                              f"{_label(owner, _distributions.get(owner))}")
            continue
        for hook, things in provided.items():
            tables[hook].update(things)
            owners.update({(hook, thing): name for thing in things})
    return tables


def _table(hook: str) -> dict:
    return _registries()[hook]


# The registries, one per hook: name -> the registered thing. Stages include every format's convert.<format>.
stages = partial(_table, "register_stages")
formats = partial(_table, "register_formats")
datasets = partial(_table, "register_datasets")
models = partial(_table, "register_models")
transports = partial(_table, "register_transports")
runners = partial(_table, "register_runners")
energy_probes = partial(_table, "register_energy_probes")
tasks = partial(_table, "register_tasks")


def lookup(table: dict, name: str, what: str):
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        skipped = "".join(f"; {_label(plugin, dist)} was skipped as broken ({reason}), it may provide it"
                          for plugin, (dist, reason) in _skipped.items())
        raise PluginError(f"unknown {what} {name!r}; registered: {known}{skipped}") from None


def distribution_of(module_name: str) -> importlib.metadata.Distribution | None:
    """The installed distribution of an entry-point plugin's module (None for built-ins and plugin files)."""
    _registries()
    top = module_name.split(".")[0]
    for name, dist in _distributions.items():
        entry = next((ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP and ep.name == name), None)
        if entry is not None and entry.module.split(".")[0] == top:
            return dist
    return None


def describe_plugins() -> list[dict]:
    """What ``slimlab plugins`` prints: name, version and hooks of each loaded plugin, and each skipped one
    with why."""
    pm = plugin_manager()
    _registries()  # a plugin whose hook fails is skipped here
    rows = []
    for name, plugin in pm.list_name_plugin():
        dist = _distributions.get(name)
        version = dist.version if dist else (None if name.endswith(".py") else __version__)
        rows.append({"name": name, "version": version, "hooks": sorted(h.name for h in pm.get_hookcallers(plugin))})
    rows += [{"name": name, "version": dist.version if dist else None, "skipped": reason}
             for name, (dist, reason) in _skipped.items()]
    return sorted(rows, key=lambda row: row["name"])
