"""The hooks a slimlab plugin can implement. The types they register are in :mod:`slimlab.api`.

Every hook receives a ``register`` callable, as in llm and datasette. A plugin
calls it once per thing it provides, in one form for every hook::

    register(thing)

``thing`` carries its own ``name`` (``thing.name``), the name configs and the
inventory use. Built-ins use the same hooks as third-party plugins.
"""

import pluggy

hookspec = pluggy.HookspecMarker("slimlab")
hookimpl = pluggy.HookimplMarker("slimlab")


@hookspec
def register_stages(register):
    """Recipe steps: ``register(Stage(name, run, Params, inputs=..., output=...))`` (:class:`slimlab.api.Stage`)."""


@hookspec
def register_formats(register):
    """Model formats: ``register(MyFormat())``, a :class:`slimlab.api.Format` with its files, host I/O,
    runtime options and device adapter. Its ``convert.<name>`` stage is its ``converter`` attribute: registering
    the format registers it."""


@hookspec
def register_datasets(register):
    """Data sets: ``register(Dataset(name, load, Params))`` (:class:`slimlab.api.Dataset`); ``load(params)`` gives
    images (NHWC float32) and integer labels, or pre-made splits."""


@hookspec
def register_tasks(register):
    """What models are for: ``register(MyTask())``, a :class:`slimlab.api.Task` that says which outputs it reads,
    how labels look and its metrics (``classification``, ``regression``, ``detection``, ``segmentation``,
    ``fidelity``)."""


@hookspec
def register_models(register):
    """Architectures that ``train`` builds: ``register(Architecture(name, build))`` (:class:`slimlab.api.Architecture`);
    ``build(input_shape, num_classes, **params)`` returns an untrained tf_keras model."""


@hookspec
def register_transports(register):
    """Ways to reach a device: ``register(MyTransport)``, a :class:`slimlab.api.Transport` subclass
    with ``name`` and a pydantic ``Settings`` for its inventory block (named after the transport)."""


@hookspec
def register_runners(register):
    """Ways to time a model on a device: ``register(MyRunner)``, a :class:`slimlab.api.Runner` subclass
    with ``name``, ``Settings`` (its inventory block) and the runtime options it honours."""


@hookspec
def register_energy_probes(register):
    """Energy meters: ``register(MyProbe)``, a :class:`slimlab.api.EnergyProbe` subclass with ``name``
    and ``Settings`` (the inventory's ``energy`` block besides ``probe``)."""
