"""import: start a recipe from a model you already have, instead of training one.

``import: {path: models/classifier.keras}`` takes:

- a Keras 3 ``.keras`` file (the default save format of current TensorFlow), rebuilt as a
  tf_keras model layer by layer (:mod:`slimlab.kit.keras3`), so that every Keras stage
  works on it; a layer that cannot come through is refused by name, with what to do;
- a tf_keras ``.keras`` or ``.h5`` file, or a SavedModel folder;
- a ``.tflite`` or an ``.onnx`` file, which can be measured, converted where the
  converters allow, and benchmarked (Keras-only stages refuse them when the config loads).

The file's sha256 is part of the step's identity: a changed file reruns everything below
it, and nothing else. When the config loads, the file is opened, without TensorFlow: a
``.tflite`` or ``.onnx`` by its runtime (no inference), a ``.keras`` archive's config and a
``.h5``'s signature read, a folder looked into for ``saved_model.pb``; a file that is not the
model its name says, or a Keras 3 file with a layer tf_keras cannot reproduce, is refused
then. The model is checked against the data set when the artifact is built: its input
shape (NHWC, the data's, fixed but for the batch), a float input, and, if you give
``input_range``, that the data's values lie in it; and that it runs on the data and that
the config's task can read its outputs (a classifier: one logit per class). A model may
have several outputs. A mismatch is one line; nothing is transposed or rescaled behind
your back.
"""

import codecs
import zipfile
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator, model_validator

from slimlab import data, formats, hookimpl
from slimlab.errors import ArtifactError, ConfigError
from slimlab.kit import keras3
from slimlab.kit.training import keras
from slimlab.kit.files import content_sha256, existing
from slimlab.stages import Stage, StageParams
from slimlab.tasks import OutputSpec, output_specs

SUFFIXES = {".keras": "keras", ".h5": "keras", ".hdf5": "keras", ".tflite": "tflite", ".onnx": "onnx"}
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class ImportParams(StageParams):
    path: str = Field(min_length=1, description="the model file, or a SavedModel folder (relative to the working directory)")
    input_range: tuple[float, float] | None = Field(
        None, description="the input values the model expects, e.g. [0, 1] or [-1, 1]; the data must lie within")

    @field_validator("path")
    @classmethod
    def _importable(cls, path: str) -> str:
        """A known kind of model, opened now (quickly: without TensorFlow); a missing file is named with
        its step by the content hash. A Keras 3 archive's layers are checked from its config alone (the
        import checks each layer's options too)."""
        kind = model_format(path)
        if (file := Path(path).expanduser()).exists():
            try:
                check_file(file, kind)
            except OSError as exc:  # unreadable: no permission, a device file
                raise ValueError(f"{file}: cannot read it: {exc.strerror or exc}") from None
        return path

    @model_validator(mode="after")
    def _ordered_range(self):
        if self.input_range is not None and self.input_range[0] >= self.input_range[1]:
            raise ValueError(f"input_range: {list(self.input_range)} is not [low, high]")
        return self


def model_format(path: str) -> str:
    """The format a model file is imported as, from its name (a folder is a SavedModel, whatever its name;
    a missing path without a suffix is taken as one, so that it is reported missing)."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir() or (not suffix and not path.exists()):
        return "keras"
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    raise ValueError(f"{path} is not a model file slimlab can import: give a .keras, .h5, .tflite or .onnx file, "
                     "or a SavedModel folder")


def looks_like(path: Path) -> str:
    """What a file is, from its first bytes: for errors that say what was found instead of a model."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if head.startswith(HDF5_SIGNATURE):
        return "an HDF5 file"
    if head[4:8] == b"TFL3":
        return "a TFLite flatbuffer"
    try:  # incremental: a character cut at the end of the head is still text
        codecs.getincrementaldecoder("utf-8")().decode(head)
    except UnicodeDecodeError:
        return "binary data"
    return "binary data" if b"\0" in head else "a text file"


def check_file(path: Path, kind: str) -> None:
    """One ValueError line if ``path`` is not the ``kind`` of model its name says. TFLite and ONNX files are
    opened by their runtimes (no inference), Keras ones only looked into: loading them needs TensorFlow."""
    if path.is_dir():
        if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
            found = "a folder without saved_model.pb" if any(path.iterdir()) else "an empty folder"
            raise ValueError(f"{path} is {found}, not a SavedModel folder")
    elif kind != "keras":
        try:
            formats.get(kind).check(path.read_bytes())
        except Exception as exc:  # each runtime raises its own kinds for a bad file; the file is named either way
            raise ValueError(f"{path} is {looks_like(path)}, not a valid {kind} model: "
                             f"{keras3.one_line(exc)}") from None
    elif path.suffix.lower() == ".keras":
        try:
            with zipfile.ZipFile(path) as zf:
                archive = "config.json" in zf.namelist()
        except zipfile.BadZipFile:
            archive = False
        if not archive:
            raise ValueError(f"{path} is {looks_like(path)}, not a .keras archive (a zip holding config.json)")
        try:
            keras3.importable_config(path, quick=True)
        except ArtifactError as exc:  # names the file
            raise ValueError(str(exc)) from None
        except (zipfile.BadZipFile, ValueError) as exc:  # config.json cut off, or not JSON
            raise ValueError(f"{path}: its config.json cannot be read: {keras3.one_line(exc)}") from None
    elif (found := looks_like(path)) != "an HDF5 file":
        raise ValueError(f"{path} is {found}, not a Keras .h5 file (HDF5)")


def load(path: Path, kind: str):
    """The model in slimlab's in-memory form for ``kind``: a tf_keras model, or the file's bytes (checked
    when the params were)."""
    if kind != "keras":
        return path.read_bytes()
    try:
        return keras3.load_any_keras(path)
    except ArtifactError as exc:  # already one line naming the file
        raise ArtifactError(f"import: {exc}") from None


def check_inputs(specs: dict[str, dict], splits, params: ImportParams, path: Path) -> None:
    """The model's inputs fit the data as it is: names (several inputs), shapes, dtypes and (if declared) the value
    range."""
    shapes = splits.input_shapes
    if shapes is None and len(specs) > 1:
        raise ConfigError(f"import: {path} takes {len(specs)} inputs ({', '.join(specs)}), the data set gives one; "
                          "give one array per input (npz: x_key: [name, ...])")
    if shapes is not None and set(shapes) != set(specs):
        raise ConfigError(f"import: {path} takes inputs {sorted(specs)}, the data set gives {sorted(shapes)}")
    for name, spec in specs.items():
        check_input(spec, shapes[name] if shapes else splits.input_shape, path, "" if shapes is None else name)
    low, high = splits.value_range
    if params.input_range is not None and (low < params.input_range[0] or high > params.input_range[1]):
        raise ConfigError(f"import: the data's values run from {low:g} to {high:g}, outside the model's "
                          f"input_range {list(params.input_range)}; set the data set's scaling to match")


def check_input(spec: dict, data_shape: tuple, path: Path, name: str) -> None:
    """One input: its shape against the data's, and a float dtype."""
    expected, shape = [None, *data_shape], spec["shape"]
    takes = f"takes input {name!r} of shape" if name else "takes input"
    if len(shape) != len(expected) or any(m not in (None, d) for m, d in zip(shape[1:], expected[1:])):
        hint = ""
        if len(shape) == 4 and shape[1] == expected[-1] and list(shape[2:]) == expected[1:3]:
            hint = "; the model is channel-first (NCHW) and the data is NHWC: export the model with NHWC input"
        raise ConfigError(f"import: {path} {takes} {shape}, the data set gives {expected}{hint}")
    if None in shape[1:]:
        raise ConfigError(f"import: {path} {takes} {shape}, with free dimensions besides the batch; export it "
                          f"with the fixed input shape {expected}, which every format and device can then run")
    if not np.issubdtype(np.dtype(spec["dtype"]), np.floating):
        raise ConfigError(f"import: {path} takes {spec['dtype']} input; import its float model (quantize it with "
                          "a quantize.* step), since slimlab feeds the data as float")


def check_outputs(fmt, model, splits, task, path: Path) -> list[OutputSpec]:
    """The model runs on the data's images, and the task can read its outputs; for class labels, the output read
    gives one logit per class of the data set. Returns every output's name and shape."""
    x = data.take(splits.x_val, slice(0, 2))
    try:
        outputs = fmt.predict(model, x)
    except Exception as exc:  # each runtime raises its own kinds; the file is named either way
        raise ArtifactError(f"import: {path} does not run on the data set's images: {keras3.one_line(exc)}") from None
    specs = output_specs(outputs)
    try:
        read = task[0].reads(task[1], specs)
    except ConfigError as exc:
        raise ConfigError(f"import: {path}: {exc}") from None
    if splits.num_classes is not None:
        shape = outputs[read[0]].shape
        if shape != (2, splits.num_classes):
            raise ConfigError(f"import: {path} gives output {read[0]!r} of shape {[None, *shape[1:]]} for a batch; "
                              f"the data set has {splits.num_classes} classes, so slimlab reads it as logits of shape "
                              f"[None, {splits.num_classes}]")
    return specs


def to_logits(model):
    """A single-output Keras model that ends in a softmax, made to end before it: slimlab fine-tunes on logits (the
    predicted class, and so every accuracy, stays the same). Returns the model and what was removed."""
    if len(model.outputs) != 1:
        return model, None
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if type(last).__name__ == "Softmax" or (type(last).__name__ == "Activation" and activation == "softmax"):
        if isinstance(last.input, list):
            return model, None
        return keras().Model(model.inputs, last.input, name=model.name), f"the final {type(last).__name__} layer"
    if activation == "softmax":
        last.activation = keras().activations.linear
        return model, f"the softmax activation of {last.name!r}"
    return model, None


def opened(params: ImportParams, splits, task) -> tuple:
    """The model loaded and checked against the data and the task: (model, its format, what the import record
    says about it)."""
    path = existing(params.path, "import.path")
    kind = model_format(params.path)
    fmt = formats.get(kind)
    model = load(path, kind)
    stripped = None
    if kind == "keras" and task[0].stratify:
        model, stripped = to_logits(model)
    specs = fmt.input_specs(model)
    check_inputs(specs, splits, params, path)
    outputs = check_outputs(fmt, model, splits, task, path)
    return model, kind, {"path": str(path), "format": kind, "inputs": specs, "softmax_removed": stripped,
                         "outputs": {output.name: list(output.shape) for output in outputs}}


def check_import(params: ImportParams, splits, task) -> None:
    """What ``slimlab validate`` checks before any run: the model fits the data and the task."""
    opened(params, splits, task)


def import_model(_, params: ImportParams, ctx):
    """Start from a model file: Keras 3 or tf_keras .keras/.h5, SavedModel, .tflite or .onnx."""
    model, _, imported = opened(params, ctx.splits, ctx.task)
    ctx.record(imported={**imported, "sha256": content_sha256(params.path, what="import.path")})
    return model


@hookimpl
def register_stages(register):
    register(Stage("import", import_model, ImportParams, inputs=(),
                   output=lambda params: model_format(params.path),
                   reads=lambda params: content_sha256(params.path, what="import.path"), check=check_import))
