"""The hooks a slimlab plugin can implement.

Every hook receives a ``register`` callable, as in llm and datasette. A plugin
calls it once per thing it provides, in one form for every hook::

    register(thing)

``thing`` carries its own ``name`` (``thing.name``), the name configs and the
inventory use. Two plugins that register the same name in one hook are an
error that names both. Built-ins use the same hooks as third-party plugins.
"""

import pluggy

hookspec = pluggy.HookspecMarker("slimlab")
hookimpl = pluggy.HookimplMarker("slimlab")


@hookspec
def register_stages(register):
    """Recipe steps: ``register(Stage(name, run, Params, inputs=..., output=...))`` (:mod:`slimlab.stages`)."""


@hookspec
def register_formats(register):
    """Model formats: ``register(MyFormat())``, a :class:`slimlab.formats.Format` with its files, host I/O,
    runtime options and on-device runtime adapter. Its ``convert.<name>`` stage goes to ``register_stages``."""


@hookspec
def register_datasets(register):
    """Data sets: ``register(Dataset(name, load, Params))`` (:mod:`slimlab.data`); ``load(params)`` gives
    images (NHWC float32) and integer labels, or pre-made splits."""


@hookspec
def register_models(register):
    """Architectures that ``train`` builds: ``register(Architecture(name, build))`` (:mod:`slimlab.kit.training`);
    ``build(input_shape, num_classes, **params)`` returns an untrained tf_keras model."""


@hookspec
def register_transports(register):
    """Ways to reach a device: ``register(MyTransport)``, a :class:`slimlab.lab.transport.Transport` subclass
    with ``name`` and a pydantic ``Settings`` for its inventory block (named after the transport)."""


@hookspec
def register_runners(register):
    """Ways to time a model on a device: ``register(MyRunner)``, a :class:`slimlab.lab.runner.Runner` subclass
    with ``name``, ``Settings`` (its inventory block) and the runtime options it honours."""


@hookspec
def register_energy_probes(register):
    """Energy meters: ``register(MyProbe)``, a :class:`slimlab.lab.energy.EnergyProbe` subclass with ``name``
    and ``Settings`` (the inventory's ``energy`` block besides ``probe``)."""
