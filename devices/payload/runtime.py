"""What a runtime adapter implements, and the checks every adapter shares.

An adapter is one file holding a class ``Adapter(Runtime)``: the file a format names as
its ``runtime_adapter``. The payload carries it as ``slimlab_payload/runtimes/<format>.py``
and the host imports it under that name to predict. Its options were validated on the host
against the format's options model; the payload checks them again against the same schema,
shipped beside the adapter as ``<format>.options.json``, because the payload may run a
different runtime version than the host expects.
"""

import importlib
import json
import pkgutil
from abc import ABC, abstractmethod


class PayloadError(Exception):
    """A problem the user must fix (an option, a missing runtime): reported as one line, exit 2."""


def require(module: str):
    """Import a runtime's module, or say that this device lacks it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PayloadError(f"runtime module {module!r} is not installed on this device ({exc})") from None


def named_inputs(sample, names) -> dict:
    """A sample by input name: a dict of several must name exactly the model's inputs; a bare array is the one
    input's."""
    names = list(names)
    if not isinstance(sample, dict):
        if len(names) != 1:
            raise PayloadError(f"the model takes {len(names)} inputs ({', '.join(names)}); one array was given")
        return {names[0]: sample}
    if sorted(sample) != sorted(names):
        raise PayloadError(f"the model takes inputs {sorted(names)}, the sample gives {sorted(sample)}")
    return sample


def random_input(np, shape, dtype, rng):
    """Uniform noise in the tensor's type: [0, 1) for floats, the full range for integers."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


_TYPES = {"number": (int, float), "string": str}


def _has_type(value, type_name: str) -> bool:
    """JSON Schema's meaning of the type names: 2.0 is an integer, true is not a number."""
    if type_name == "boolean" or isinstance(value, bool):  # in Python a bool is also an int
        return type_name == "boolean" and isinstance(value, bool)
    if type_name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if type_name not in _TYPES:
        raise PayloadError(f"option type {type_name!r} is not one this payload can check")
    return isinstance(value, _TYPES[type_name])


def check_options(runtime: str, options: dict, schema: dict) -> dict:
    """The options, if ``schema`` (the format's flat options schema) allows every one."""
    allowed = schema.get("properties", {})
    for name, value in options.items():
        if name not in allowed:
            raise PayloadError(f"unknown {runtime} option {name!r} (known: {', '.join(allowed) or 'none'})")
        spec = allowed[name]
        if "enum" in spec and value not in spec["enum"]:
            raise PayloadError(f"{runtime} option {name!r} must be one of {', '.join(map(str, spec['enum']))}, "
                               f"got {value!r}")
        if "type" in spec and not _has_type(value, spec["type"]):
            raise PayloadError(f"{runtime} option {name!r} must be of type {spec['type']}, got {value!r}")
    return options


class Runtime(ABC):
    """A format's device adapter: ``class Adapter(Runtime)`` in the file its format names as ``runtime_adapter``.

    It runs on the device with NumPy and its runtime only (no slimlab), so it imports from
    ``slimlab_payload.runtime``. The payload calls, in this order:

    - ``Adapter(np)``: imports the runtime (untimed). Set ``module`` to have it imported as ``self.lib`` with its
      version in ``self.version`` (else set ``version``); a missing runtime raises :class:`PayloadError`;
    - ``load(files, threads, options)``: the model's files on the device (main first, as the format's
      ``filenames``), the thread count and the option set's options for this format (already checked against
      the format's options schema); timed as init;
    - ``feed(rng, input_shape)``: set a random input (``random_input`` draws one per tensor type) (untimed);
      ``input_shape`` is the format's ``device_input_shape`` where the model file carries none, else None;
    - ``invoke()``: one inference, timed; it must do the whole work every call;
    - ``applied() -> dict``: the options as the runtime reports them back (the record's ``options.reported``);
    - ``observed() -> dict``: runtime facts worth keeping besides the options (e.g. delegated nodes);
    - ``memory() -> dict``: the runtime's own account of the memory it holds, where it gives one.

    ``outputs(sample) -> {name: array}`` runs one real sample (NHWC, no batch axis) and returns every model
    output, in the model's order, as float32 arrays without the batch axis; the host's ``Format.predict`` and a
    device's evaluation both go through it. An adapter of a single-output model may implement
    ``predict(sample) -> array`` instead. Without either the format cannot be evaluated. Raise
    :class:`PayloadError` for anything the user must fix (one line, exit 2).
    """

    module: str | None = None
    version: str = "unknown"

    def __init__(self, np):
        self.np = np
        if self.module:
            self.lib = require(self.module)
            version = getattr(self.lib, "__version__", None) or getattr(self.lib, "version", lambda: "?")()
            self.version = f"{self.module} {version}"

    @abstractmethod
    def load(self, files: list[str], threads: int, options: dict) -> None:
        """Load the model from ``files`` (main first) with ``threads`` and the checked ``options``; timed as init."""

    @abstractmethod
    def feed(self, rng, input_shape: list[int] | None) -> None:
        """Set a random input for every model input (untimed); ``input_shape`` where the file carries none."""

    @abstractmethod
    def invoke(self) -> None:
        """One whole inference on the fed input: the timed unit."""

    @abstractmethod
    def applied(self) -> dict:
        """The options as the runtime reports them back after ``load`` (the record's ``options.reported``)."""

    def outputs(self, sample) -> dict:
        """Every output of the model for one sample, given as Keras takes it (NHWC, no batch axis; a model of
        several inputs: a dict of them by input name): output name -> float32 array without the batch axis, in the
        model's order."""
        return {"output": self.predict(sample)}

    def predict(self, sample):
        """The one output of a single-output model for one sample, as a float32 array (see ``outputs``)."""
        raise PayloadError(f"the {type(self).__module__} adapter has no outputs(sample): it cannot evaluate a model")

    def run_batch(self, x) -> dict:
        """``outputs`` of every sample of a batch (several inputs: a dict of batches by input name): output name ->
        array with the batch first."""
        samples = [{name: batch[i] for name, batch in x.items()} for i in range(len(next(iter(x.values()))))] \
            if isinstance(x, dict) else x
        rows = [self.outputs(sample) for sample in samples]
        return {name: self.np.stack([row[name] for row in rows]) for name in rows[0]}

    def observed(self) -> dict:
        """Runtime-specific facts for the record besides the options (e.g. delegated nodes)."""
        return {}

    def memory(self) -> dict:
        """The runtime's own account of the memory it holds, where it gives one (e.g. MNN's session MB)."""
        return {}


def adapter(runtime: str) -> tuple[type[Runtime], dict]:
    """The adapter class for ``runtime`` and its options schema, from the payload's runtimes/ folder."""
    try:
        module = importlib.import_module(f"slimlab_payload.runtimes.{runtime}")
    except ModuleNotFoundError as exc:
        if exc.name != f"slimlab_payload.runtimes.{runtime}":
            raise
        raise PayloadError(f"this payload has no {runtime!r} runtime adapter") from None
    return module.Adapter, json.loads(pkgutil.get_data("slimlab_payload.runtimes", f"{runtime}.options.json"))
