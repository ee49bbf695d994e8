"""The hooks a slimlab plugin can implement.

Each hook receives a ``register`` callable, as in llm and datasette: a plugin
calls it once per thing it provides. Built-ins use the same hooks.
"""

import pluggy

hookspec = pluggy.HookspecMarker("slimlab")
hookimpl = pluggy.HookimplMarker("slimlab")


@hookspec
def register_stages(register):
    """Register compression/conversion stages: ``register(stage)``, a :class:`slimlab.stages.Stage`."""


@hookspec
def register_datasets(register):
    """Register data sets: ``register(name, loader)``; ``loader(seed) -> slimlab.data.Splits``."""


@hookspec
def register_models(register):
    """Register model architectures: ``register(name, build)``; ``build(input_shape, num_classes, **params)``."""


@hookspec
def register_transports(register):
    """Register device transports: ``register(name, factory)``; ``factory(device) -> Transport``."""


@hookspec
def register_runners(register):
    """Register device runners: ``register(name, factory)``; ``factory(device, transport) -> Runner``."""


@hookspec
def register_energy_probes(register):
    """Register energy probes: ``register(name, factory)``; ``factory(device, transport) -> EnergyProbe``."""
