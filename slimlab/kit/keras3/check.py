"""Reading a ``.keras`` archive, deciding whether tf_keras can reproduce it, and translating layer configs.

Everything here works from ``config.json`` alone, before any Keras 3 code runs, so a
custom layer is refused with slimlab's message rather than Keras's "Could not locate
class". Every layer must be a built-in ``keras.layers`` class in :data:`SUPPORTED_LAYERS`,
with options tf_keras can express; activations must compute exactly what Keras 3 does.
"""

from __future__ import annotations

import inspect
import json
import zipfile
from pathlib import Path
from typing import Any

from slimlab.errors import ArtifactError
from slimlab.kit.training import keras as tf_keras

SUPPORTED_LAYERS = frozenset({
    "InputLayer", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
    "BatchNormalization", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
    "GlobalMaxPooling2D", "Add", "Concatenate", "Multiply", "Activation", "ReLU", "Softmax",
    "Dropout", "Reshape", "Flatten", "ZeroPadding2D", "Rescaling",
    # same config and weight layout in both Keras versions (each covered by a test)
    "Conv2DTranspose", "MaxPooling1D", "AveragePooling1D", "GlobalAveragePooling1D",
    "GlobalMaxPooling1D", "Subtract", "Average", "Maximum", "Minimum", "UpSampling2D",
    "Cropping2D", "ZeroPadding1D", "LeakyReLU", "PReLU", "ELU", "Permute",
    "SpatialDropout1D", "SpatialDropout2D", "Normalization",
})
_MODEL_CLASSES = frozenset({"Functional", "Model", "Sequential"})

# Activations whose tf_keras function computes the same as Keras 3's (max diff 0 on [-8, 8]);
# Keras 3 writes swish as "silu". Not here on purpose: "hard_sigmoid" (Keras 3: relu6(x+3)/6,
# tf_keras: clip(0.2x+0.5), up to 0.083 apart) and Keras-3-only ones (hard_silu, celu, glu, ...).
ACTIVATIONS = {
    "linear": "linear", "relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid",
    "softmax": "softmax", "log_softmax": "log_softmax", "tanh": "tanh",
    "softplus": "softplus", "softsign": "softsign", "selu": "selu", "elu": "elu",
    "exponential": "exponential", "silu": "swish", "swish": "swish", "gelu": "gelu",
    "mish": "mish", "leaky_relu": "leaky_relu",
}

# Keras 3 options tf_keras lacks: dropped when the value is harmless, refused otherwise.
# _ANY: ignored whatever it is (it only matters together with another option).
_ANY = object()
_DROPPABLE = {
    "quantization_config": (None,),
    "lora_rank": (None,),
    "lora_alpha": (None,),
    "optional": (False,),  # InputLayer
    "renorm": (False,),  # BatchNormalization
    "renorm_clipping": _ANY,
    "renorm_momentum": _ANY,
    "data_format": ("channels_last",),  # ZeroPadding1D, SpatialDropout1D (tf_keras: always last)
}
_RENAMES = {"LeakyReLU": {"negative_slope": "alpha"}}
# Keys every tf_keras layer accepts through **kwargs.
_BASE_KWARGS = frozenset({"name", "trainable", "dtype", "input_shape", "batch_input_shape",
                          "batch_size", "input_dim", "activity_regularizer", "autocast", "dynamic"})
_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "mixed_float16", "mixed_bfloat16",
                     "int32", "int64", "uint8", "bool"})

ADVICE = "re-save the model with tf_keras, or convert it to ONNX/TFLite and import that"
_UNSUPPORTED = "which slimlab's Keras 3 import does not support"


class Keras3ImportError(ArtifactError):
    """A model file slimlab cannot import. One line: the file (once known), then why."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__(message)
        self.message, self.path = message, path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class UnsupportedKeras3Model(Keras3ImportError):
    """Layers or options tf_keras cannot reproduce: ``problems`` lists each, the message all of them."""

    def __init__(self, problems: list[str], path: str | Path | None = None):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems) + f"; {ADVICE}", path)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (TensorFlow's and the runtimes' often span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------------------ archive


def read_archive(path) -> tuple[dict, dict]:
    """(config, metadata) of a ``.keras`` zip, without importing any Keras."""
    if not zipfile.is_zipfile(path):
        raise Keras3ImportError("not a .keras archive (not a zip; truncated or corrupt?)", path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if "config.json" not in names:
            raise Keras3ImportError("no config.json inside; not a .keras model archive", path)
        config = json.loads(zf.read("config.json"))
        metadata = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
    return config, metadata


def keras_version_of(path) -> str:
    """The Keras version that wrote a ``.keras`` archive ("" if it does not say)."""
    return str(read_archive(path)[1].get("keras_version", ""))


def is_tf_keras_version(version: str) -> bool:
    """tf_keras (Keras 2) writes its version into every archive; anything else is read as Keras 3."""
    return version.startswith("2.")


def importable_config(path, *, quick: bool = False) -> tuple[dict, str]:
    """(config, Keras version) of a ``.keras`` archive. One written by Keras 3 that tf_keras cannot
    reproduce raises UnsupportedKeras3Model naming the file and every problem (``quick``: see check)."""
    config, metadata = read_archive(path)
    version = str(metadata.get("keras_version", ""))
    if not is_tf_keras_version(version):
        problems = check(config, quick=quick)
        if problems:
            raise UnsupportedKeras3Model(problems, path)
    return config, version


# ------------------------------------------------------------------------------ checking


def layer_name(layer_cfg: dict) -> str:
    return layer_cfg.get("name") or layer_cfg.get("config", {}).get("name") or "?"


def is_model(layer_cfg: dict) -> bool:
    """A built-in Functional/Sequential model (top level or nested), not a subclassed one."""
    return (layer_cfg.get("class_name") in _MODEL_CLASSES
            and (layer_cfg.get("module") or "keras").split(".")[0] == "keras"
            and layer_cfg.get("registered_name") in (None, layer_cfg.get("class_name"))
            and "layers" in layer_cfg.get("config", {}))


def is_functional(layer_cfg: dict) -> bool:
    return is_model(layer_cfg) and layer_cfg["class_name"] != "Sequential"


def _builtin_layer(layer_cfg: dict) -> bool:
    module = layer_cfg.get("module") or ""
    return ((module == "keras.layers" or module.startswith("keras.src.layers"))
            and layer_cfg.get("registered_name") in (None, layer_cfg.get("class_name")))


def _describe(layer_cfg: dict) -> str:
    module, cls = layer_cfg.get("module") or "?", layer_cfg.get("class_name", "?")
    registered = layer_cfg.get("registered_name")
    if registered and registered != cls:
        return f"a custom layer (registered as {registered!r}, class {module}.{cls})"
    if module.startswith(("keras.src.ops", "keras.ops")):
        return (f"a Keras 3 operation ({module}.{cls}: an `x + y`-style expression or keras.ops call "
                "in the model code, which has no tf_keras layer)")
    if not _builtin_layer(layer_cfg):
        return f"a custom layer ({module}.{cls})"
    return f"a keras.layers.{cls}"


def check(config: dict, *, quick: bool = False) -> list[str]:
    """Every reason this model config cannot be imported (empty list: it can).

    ``quick`` leaves out what needs tf_keras's layer classes, and so TensorFlow (seconds to load):
    whether each option has a tf_keras equivalent. Classes, activations and dtypes are checked.
    """
    if not is_model(config):
        return [f"the model is a {config.get('module', '?')}.{config.get('class_name', '?')} (a subclassed "
                f"model: its graph is Python code, not stored in the file), {_UNSUPPORTED}"]
    problems: list[str] = []
    _check_model(config, problems, quick)
    return problems


def _check_model(model_cfg: dict, problems: list[str], quick: bool) -> None:
    for layer in model_cfg["config"]["layers"]:
        name = layer_name(layer)
        if is_model(layer):
            _check_model(layer, problems, quick)
            continue
        if not _builtin_layer(layer) or layer.get("class_name") not in SUPPORTED_LAYERS:
            problems.append(f"layer {name!r} is {_describe(layer)}, {_UNSUPPORTED}")
            continue
        try:
            translate_layer_config(layer["class_name"], layer.get("config", {}), quick=quick)
        except UnsupportedKeras3Model as exc:
            problems.extend(exc.problems)
        for node in layer.get("inbound_nodes", []):
            if isinstance(node, list):
                problems.append(f"layer {name!r} uses the Keras 2 node format in a Keras 3 file, {_UNSUPPORTED}")
                break
            for key, value in (node.get("kwargs") or {}).items():
                if (key == "training" and value in (None, True, False)) or (key == "mask" and value is None):
                    continue
                problems.append(f"layer {name!r} is called with {key}={value!r}, {_UNSUPPORTED}")


# ------------------------------------------------------------------------------ config translation


def _dtype_name(value, where: str) -> str | None:
    """A Keras 3 dtype or DTypePolicy dict as the policy name tf_keras takes; quantized policies refused."""
    if isinstance(value, dict):
        cls = value.get("class_name", "")
        name = (value.get("config") or {}).get("name")
        if "Quantized" in cls or cls not in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
            raise UnsupportedKeras3Model([f"{where} has dtype policy {cls}({name!r}), a quantized Keras 3 layer, "
                                          f"{_UNSUPPORTED}"])
    else:
        name = None if value is None else str(value)
    if name and name not in _DTYPES:
        raise UnsupportedKeras3Model([f"{where} has dtype {name!r}, {_UNSUPPORTED}"])
    return name


def _init_params(cls) -> tuple[set[str], bool]:
    """Named ``__init__`` parameters along the MRO, as long as each level passes ``**kwargs`` up;
    and whether the last level takes ``**kwargs`` (then the base layer keywords are accepted too)."""
    params: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        sig = inspect.signature(klass.__init__)
        params |= {p.name for p in sig.parameters.values()
                   if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return params, False
        if klass.__module__.endswith("engine.base_layer"):
            break
    return params, True


def _translate_object(kind: str, value, where: str, notes: list[str]):
    """A Keras 3 serialized initializer/regularizer/constraint as a tf_keras object (None: the default).

    These only affect training, so what tf_keras lacks is dropped with a note rather than refused.
    """
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict) or "class_name" not in value:
        notes.append(f"{where}: dropped {kind} {value!r} (not understood)")
        return None
    cls_name, cfg = value["class_name"], dict(value.get("config") or {})
    cls = getattr(getattr(tf_keras(), kind + "s"), cls_name, None)
    if cls is None or not (value.get("module") or "keras").startswith("keras") or \
            value.get("registered_name") not in (None, cls_name):
        notes.append(f"{where}: dropped {kind} {cls_name} (tf_keras has no equivalent)")
        return None
    params, _ = _init_params(cls)
    dropped = {k: v for k, v in cfg.items() if k not in params and v is not None}
    if dropped:
        notes.append(f"{where}: {kind} {cls_name} lost options {dropped}")
    try:
        return cls(**{k: v for k, v in cfg.items() if k in params})
    except Exception as exc:  # noqa: BLE001 - best effort for training-only settings, noted
        notes.append(f"{where}: dropped {kind} {cls_name} ({exc})")
        return None


def _translate_value(key: str, value, class_name: str, where: str, notes: list[str],
                     quick: bool) -> tuple[str, Any]:
    """One config entry as tf_keras wants it: (key, value); UnsupportedKeras3Model if it has no equivalent.
    ``quick`` leaves initializers, regularizers and constraints as they are."""
    key = _RENAMES.get(class_name, {}).get(key, key)
    if key == "dtype":
        return key, _dtype_name(value, where)
    if key == "batch_shape" and class_name == "InputLayer":
        return "batch_input_shape", value
    for kind in ("initializer", "regularizer", "constraint"):
        if key.endswith(f"_{kind}"):
            return key, value if quick else _translate_object(kind, value, f"{where}.{key}", notes)
    if key == "activation":
        if not isinstance(value, str) or value not in ACTIVATIONS:
            shown = value.get("config", value) if isinstance(value, dict) else value
            raise UnsupportedKeras3Model([f"{where} uses activation {shown!r}, which tf_keras does not "
                                          "compute the same way"])
        return key, ACTIVATIONS[value]
    if key == "data_format" and value == "channels_first":
        raise UnsupportedKeras3Model([f"{where} is channels_first, which tf_keras cannot run on CPU for all ops"])
    return key, value


def translate_layer_config(class_name: str, cfg3: dict, notes: list[str] | None = None, *,
                           quick: bool = False) -> tuple[type | None, dict]:
    """(tf_keras layer class, tf_keras config) for one Keras 3 layer config.

    Raises UnsupportedKeras3Model listing every option it cannot translate; ``notes``
    collects what it dropped as harmless (training-only settings). ``quick`` only checks
    what needs no tf_keras class (see :func:`check`) and returns no class.
    """
    notes = [] if notes is None else notes
    where = f"layer {cfg3.get('name', '?')!r} ({class_name})"
    cls = None if quick else getattr(tf_keras().layers, class_name)
    if cls is not None:
        params, var_kw = _init_params(cls)
        accepted = params | (_BASE_KWARGS if var_kw else set())
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key3, value3 in cfg3.items():
        try:
            key, value = _translate_value(key3, value3, class_name, where, notes, quick)
        except UnsupportedKeras3Model as exc:
            problems.extend(exc.problems)
            continue
        if cls is None or key in accepted:
            out[key] = value
            continue
        allowed = _DROPPABLE.get(key)
        if not (allowed is _ANY or (allowed is not None and value in allowed)):
            problems.append(f"{where} sets {key}={value!r}, which tf_keras cannot express")
    if class_name == "InputLayer":
        problems += [f"{where} is a {flag} input, {_UNSUPPORTED}" for flag in ("sparse", "ragged") if out.get(flag)]
    if problems:
        raise UnsupportedKeras3Model(problems)
    return cls, out
