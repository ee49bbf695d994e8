"""The two sources of a Keras 3 file's weights, and their assignment to the rebuilt tf_keras layers.

- :class:`Keras3Weights` (the default): Keras 3 loads the file itself, in this process. It
  is the authority on its own h5 layout, and its variables carry names, so the copy is
  checked by name. Its model is also the reference for the import's verification.
- :class:`H5Weights` (the fallback when Keras 3 cannot load the file): ``model.weights.h5``
  read directly. Its groups are *not* ``layers/<layer name>``: Keras 3 names them
  ``layers/<snake_case(class name)>[_N]``, numbered in model order, so a user-named
  ``stem_bn`` sits in ``layers/batch_normalization``. :func:`h5_layer_paths` replicates that
  and the reader checks it against the ``name`` attribute newer Keras 3 versions write.
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np

from slimlab.kit.keras3.check import Keras3ImportError, is_model, layer_name

# Keras 3 variable name -> tf_keras variable name, where they differ.
_VAR_ALIASES = {"DepthwiseConv2D": {"kernel": "depthwise_kernel"},
                "DepthwiseConv1D": {"kernel": "depthwise_kernel"}}


def to_snake_case(name: str) -> str:
    """Keras 3's ``naming.to_snake_case``, which names the h5 groups."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def h5_layer_paths(model_cfg: dict, prefix: str = "", scope: tuple = ()) -> dict[tuple, str]:
    """{scoped layer name: h5 group} as Keras 3 writes them: class-name based, in model order.

    Functional models list their InputLayers among ``layers``; Sequential models do not.
    """
    paths: dict[tuple, str] = {}
    used: dict[str, int] = {}
    for layer in model_cfg["config"]["layers"]:
        if model_cfg["class_name"] == "Sequential" and layer["class_name"] == "InputLayer":
            continue
        base = to_snake_case(layer["class_name"])
        used[base] = used[base] + 1 if base in used else 0
        group = f"{prefix}layers/{base}" + (f"_{used[base]}" if used[base] else "")
        key = scope + (layer_name(layer),)
        paths[key] = group
        if is_model(layer):
            paths.update(h5_layer_paths(layer, group + "/", key))
    return paths


class H5Weights:
    """Weights straight from ``model.weights.h5`` (no Keras 3), by replicated group names."""

    model = None  # no reference model to verify against

    def __init__(self, path, config: dict):
        import h5py

        with zipfile.ZipFile(path) as zf:
            if "model.weights.h5" not in zf.namelist():
                raise Keras3ImportError("no model.weights.h5 inside (sharded or npz weights need Keras 3 to read)")
            self._file = h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r")
        self._paths = h5_layer_paths(config)

    def get(self, scoped_name: tuple) -> tuple[list[np.ndarray], list[str] | None]:
        """The layer's values in stored order; no names (the h5 keeps only indices)."""
        group_path = self._paths[scoped_name] + "/vars"
        if group_path not in self._file:
            return [], None
        group = self._file[group_path]
        stored_name = group.attrs.get("name")
        if stored_name is not None and stored_name != scoped_name[-1]:
            raise Keras3ImportError(f"h5 group {group_path} belongs to layer {stored_name!r}, expected "
                                    f"{scoped_name[-1]!r}: unknown weights layout")
        values = []
        for key in sorted(group.keys(), key=int):
            if group[key].attrs.get("dtype") == "bfloat16":
                raise Keras3ImportError(f"{group_path}/{key} is bfloat16, which only Keras 3 can read")
            values.append(np.asarray(group[key][()]))
        return values, None

    def close(self) -> None:
        self._file.close()


class Keras3Weights:
    """Weights from the model as Keras 3 loads it (``compile=False``, ``safe_mode=True``)."""

    def __init__(self, path):
        import keras

        if not keras.__version__.startswith("3."):
            raise Keras3ImportError(f"`import keras` gives Keras {keras.__version__}, not Keras 3")
        self.model = keras.saving.load_model(str(path), compile=False, safe_mode=True)

    def get(self, scoped_name: tuple) -> tuple[list[np.ndarray], list[str] | None]:
        """The layer's values and variable names (kernel, bias, gamma, ...)."""
        layer = self.model
        for part in scoped_name:
            layer = layer.get_layer(part)
        return [np.asarray(v.numpy()) for v in layer.weights], [v.name.split("/")[-1] for v in layer.weights]

    def close(self) -> None:
        pass


def assign(dst_layer, values: list[np.ndarray], names: list[str] | None, where: str) -> None:
    """Set a tf_keras layer's weights, matched by variable name (where known) and checked by shape."""
    dst_vars = dst_layer.weights
    dst_names = [v.name.split("/")[-1].split(":")[0] for v in dst_vars]
    if names is not None:
        aliases = _VAR_ALIASES.get(type(dst_layer).__name__, {})
        names = [aliases.get(n, n) for n in names]
    if len(values) != len(dst_vars):
        raise Keras3ImportError(f"{where}: Keras 3 has {len(values)} weights {names or ''}, tf_keras "
                                f"layer has {len(dst_vars)} {dst_names}")
    if names is not None and names != dst_names:
        if sorted(names) != sorted(dst_names):
            raise Keras3ImportError(f"{where}: weight names differ: Keras 3 {names}, tf_keras {dst_names}")
        values = [values[names.index(n)] for n in dst_names]
    for var, value, vname in zip(dst_vars, values, dst_names):
        if tuple(var.shape) != tuple(value.shape):
            raise Keras3ImportError(f"{where}: weight {vname!r} has shape {value.shape} in Keras 3, "
                                    f"{tuple(var.shape)} in tf_keras")
    dst_layer.set_weights([np.asarray(v, dtype=var.dtype.as_numpy_dtype) for v, var in zip(values, dst_vars)])
