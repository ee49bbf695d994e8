"""What a model format is to slimlab. Each format is one plugin module (``plugins/formats/``).

A :class:`Format` owns everything about its kind of model:

- its file names (the main file first);
- saving, loading (with a check that names a truncated or corrupt file),
  predicting on the host and reading the stored weights;
- its runtime options, as a pydantic model: the config schema of
  ``bench.options.<format>`` and the payload's check are generated from it;
- its on-device runtime adapter (a source file pushed inside the payload);
- its ``convert.<format>`` stage, as ``converter``.

Layout: every ``predict`` takes the Keras NHWC batch; a runtime that wants another
layout transposes it inside its format, once, so users never do.
"""

import importlib.util
import sys
import tempfile
from functools import cache
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from slimlab import registry
from slimlab.atomic import write_bytes
from slimlab.errors import ArtifactError


class RuntimeOptions(pydantic.BaseModel):
    """Base of a format's runtime options. Every field is optional: unset keeps the runtime's own default."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Format:
    """A model format; subclass it and ``register(MyFormat())`` from ``register_formats``.

    Class attributes: ``name`` (configs' ``formats:`` and devices' ``runtimes:``), ``filenames`` (the main file
    first), ``Options`` (a :class:`RuntimeOptions` model: the schema of ``bench.options.<name>``),
    ``runtime_adapter`` (the path of the file holding its device adapter, ``class Adapter(Runtime)``; it is
    pushed inside the payload and also runs ``predict`` on the host), ``converter`` (its ``convert.<name>``
    :class:`slimlab.stages.Stage`, registered with the stages; None if nothing converts to it),
    ``refuses`` (source format -> a one-line reason its converter does not take it, which the plan reports)
    and ``predict_options`` (the runtime options host-side ``predict`` uses).

    Methods: ``save(model, folder)`` writes the files (each atomically: :func:`slimlab.atomic.write_bytes`);
    ``load(folder)`` reads them back, raising :class:`slimlab.errors.ArtifactError` naming a bad file;
    ``predict(model, x)``, ``weights(model)``, ``macs(model)``, ``input_specs(model)`` and
    ``device_input_shape(nhwc)`` as documented on each. Only ``save`` and ``load`` are required.
    """

    name: str
    filenames: tuple[str, ...]  # the main file first
    Options: type[RuntimeOptions] = RuntimeOptions
    # The payload module that runs this format on a device (python runner); None: host only.
    runtime_adapter: Traversable | Path | None = None
    # Its ``convert.<name>`` stage (a slimlab.stages.Stage), registered with the other stages.
    converter = None
    # Why ``converter`` takes no model of a source format, by source format name: the plan's unsupported reason.
    refuses: dict[str, str] = {}
    # The runtime options host-side ``predict`` runs the adapter with: the reference devices are compared with.
    predict_options: dict = {}

    def save(self, model: Any, folder: Path) -> None:
        """Write ``model``'s files (``paths(folder)``) into ``folder``, each atomically."""
        raise NotImplementedError

    def load(self, folder: Path) -> Any:
        """The model stored in ``folder``; ArtifactError naming the file if it is not a valid model."""
        raise NotImplementedError

    def predict(self, model: Any, x) -> dict[str, np.ndarray]:
        """Every output for an NHWC float batch (several inputs: a dict of batches by input name): output name ->
        array with the batch first, in the model's order.

        A format with a ``runtime_adapter`` predicts with that adapter (with ``predict_options``), the code that
        runs the model on devices, so the host's outputs and a device's evaluation come from the same lines; a
        third-party adapter is found through its format. A format without one implements this.
        """
        if self.runtime_adapter is None:
            raise NotImplementedError(f"format {self.name!r} cannot predict")
        runtime = adapter_module(self.name, self.runtime_adapter).Adapter(np)
        with tempfile.TemporaryDirectory(prefix=f"slimlab-{self.name}-") as tmp:
            self.save(model, Path(tmp))
            runtime.load([str(path) for path in self.paths(Path(tmp))], 1, self.predict_options)
        batch = {name: np.asarray(value, np.float32) for name, value in x.items()} if isinstance(x, dict) \
            else np.asarray(x, np.float32)
        return runtime.run_batch(batch)

    def weights(self, model: Any) -> list[np.ndarray] | None:
        """The stored weight tensors as real values; None where they cannot be decoded honestly."""
        return None

    def macs(self, model: Any) -> dict | None:
        """Multiply-accumulates of one inference: ``{"total": n, "layers": {name: n}}``; None if not counted."""
        return None

    def input_specs(self, model: Any) -> dict[str, dict]:
        """Every input of the model by name: ``{"shape": [None, H, W, C], "dtype": "float32"}``, None for free
        dims."""
        raise NotImplementedError(f"format {self.name!r} cannot tell a model's inputs")

    def input_spec(self, model: Any) -> dict:
        """The (first) input's, of :meth:`input_specs`."""
        return next(iter(self.input_specs(model).values()))

    def device_input_shape(self, nhwc: list[int]) -> list[int] | None:
        """The input shape to pass the runtime adapter, where the model file does not say (ncnn)."""
        return None

    def paths(self, folder: Path) -> list[Path]:
        return [Path(folder) / name for name in self.filenames]

    def options_schema(self) -> dict:
        """The JSON Schema of ``bench.options.<format>``: the ``Options`` model, unset values allowed."""
        return options_schema(self.Options)


class BytesFormat(Format):
    """A format whose model is one file's bytes (TFLite, ONNX, MNN): subclasses implement ``check(data)``."""

    def check(self, data: bytes) -> None:
        """Raise anything, with a message, if ``data`` is not a valid model of this format."""

    def save(self, model: bytes, folder: Path) -> None:
        write_bytes(self.paths(folder)[0], model)

    def load(self, folder: Path) -> bytes:
        path = self.paths(folder)[0]
        data = path.read_bytes()
        try:
            self.check(data)
        except Exception as exc:  # each runtime raises its own kinds for a bad file; the file is named either way
            raise ArtifactError(f"{path}: not a valid {self.name} model (truncated or corrupt?): {exc}") from None
        return data


def options_schema(model: type[pydantic.BaseModel]) -> dict:
    """A flat JSON Schema for a runtime options model: each field's type or enum, no nulls, no defaults.

    The config validates option sets against it, and the payload checks the options it is sent
    with the same schema (it has no pydantic), so both give the same answers.
    """
    properties = {}
    for name, spec in model.model_json_schema().get("properties", {}).items():
        branches = [s for s in spec.get("anyOf", [spec]) if s.get("type") != "null"]
        (chosen,) = branches
        properties[name] = {key: value for key, value in chosen.items() if key != "title"}
        if "description" in spec:
            properties[name]["description"] = spec["description"]
    return {"type": "object", "additionalProperties": False, "properties": properties}


@cache
def adapter_module(name: str, source: Traversable | Path):
    """A format's runtime adapter, imported on the host from its own file under the name it has in the payload
    (``slimlab_payload.runtimes.<name>``), so a third-party adapter runs here exactly as on a device."""
    module_name = f"slimlab_payload.runtimes.{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    with as_file(source) as path:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return module


def builtin_adapter(name: str) -> Traversable:
    """The runtime adapter that ships in slimlab's own payload package (``devices/payload/runtimes/``)."""
    return files("slimlab_payload") / "runtimes" / f"{name}.py"


def get(name: str) -> Format:
    return registry.lookup(registry.formats(), name, "format")


@cache
def options_schemas() -> dict:
    """``{format: schema}`` for every registered format: the generated part of the config schema."""
    return {name: fmt.options_schema() for name, fmt in sorted(registry.formats().items())}
