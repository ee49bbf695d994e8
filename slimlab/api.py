"""slimlab's public contract: everything a plugin author subclasses, constructs or calls.

A plugin imports from this module and from nothing else of slimlab. Each type's
docstring is its contract: every method, its arguments, what it returns and what it
may raise. A plugin module implements hooks (see :mod:`slimlab.hookspecs`) with
``@hookimpl`` and calls ``register(thing)`` once per thing, with one object that
carries its own ``name``.

- ``register_stages``: ``register(Stage(...))``; see :class:`Stage`, :class:`StageParams`, :class:`StageContext`.
- ``register_formats``: ``register(MyFormat())``; see :class:`Format` (or :class:`BytesFormat`),
  :class:`RuntimeOptions`, and the device adapter, a :class:`Runtime` subclass.
- ``register_datasets``: ``register(Dataset(...))``; see :class:`Dataset`, :class:`DatasetParams`.
- ``register_tasks``: ``register(MyTask())``; see :class:`Task`, :class:`TaskParams`, :class:`OutputSpec`.
- ``register_models``: ``register(Architecture(...))``; see :class:`Architecture` and :func:`keras`.
- ``register_transports``: ``register(MyTransport)``; see :class:`Transport` (or :class:`ShellTransport`).
- ``register_runners``: ``register(MyRunner)``; see :class:`Runner` (or extend :class:`PythonRunner`).
- ``register_energy_probes``: ``register(MyProbe)``; see :class:`EnergyProbe` (or :class:`SysfsProbe`).

Lab plugins (transports, runners, probes) declare their inventory block as a
:class:`Settings` model. Errors a user can act on are :class:`SlimlabError` subclasses,
shown as one line; anything else a plugin raises fails its step or record with the
exception's own type and message, and its traceback goes to the job's log.

A format's device adapter is a file that runs on the device without slimlab: it imports
``Runtime`` from ``slimlab_payload.runtime`` (the same class as :class:`Runtime` here).
"""

from slimlab.atomic import write_bytes
from slimlab.data import Dataset, DatasetParams
from slimlab.errors import ArtifactError, ConfigError, DeviceError, PluginError, SlimlabError, Unsupported
from slimlab.formats import BytesFormat, Format, RuntimeOptions
from slimlab.hookspecs import hookimpl
from slimlab.kit.parity import record as record_parity
from slimlab.kit.training import Architecture, keras
from slimlab.lab.devices import Settings
from slimlab.lab.energy import COUNTER, POWER, EnergyProbe, ProbeSettings, SysfsProbe, SysfsSettings
from slimlab.lab.runner import Runner
from slimlab.lab.transport import (
    CommandResult,
    DeviceOffline,
    DeviceTimeout,
    DeviceToolError,
    ShellTransport,
    Transport,
)
from slimlab.plugins.lab.python_runner import PythonRunner
from slimlab.stages import Stage, StageContext, StageParams
from slimlab.tasks import OutputParams, OutputSpec, Task, TaskParams, choose
from slimlab_payload.runtime import PayloadError, Runtime, random_input

__all__ = [
    "hookimpl",
    # stages
    "Stage", "StageParams", "StageContext",
    # formats and their device adapters
    "Format", "BytesFormat", "RuntimeOptions", "Runtime", "PayloadError", "random_input", "record_parity",
    "write_bytes",
    # data sets and architectures
    "Dataset", "DatasetParams", "Architecture", "keras",
    # tasks
    "Task", "TaskParams", "OutputParams", "OutputSpec", "choose",
    # the lab
    "Settings", "Transport", "ShellTransport", "CommandResult", "DeviceOffline", "DeviceTimeout",
    "DeviceToolError", "Runner", "PythonRunner", "EnergyProbe", "ProbeSettings", "SysfsProbe", "SysfsSettings",
    "COUNTER", "POWER",
    # errors
    "SlimlabError", "ConfigError", "ArtifactError", "DeviceError", "PluginError", "Unsupported",
]
