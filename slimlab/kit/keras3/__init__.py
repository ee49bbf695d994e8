"""Keras model files as tf_keras models, so that tfmot and every Keras stage work on them.

:func:`load_any_keras` takes any Keras model file: a Keras 3 ``.keras`` archive (the
default save format of current TensorFlow) is imported; a tf_keras ``.keras``, a ``.h5``
and a SavedModel folder are loaded by tf_keras. Errors are ``ArtifactError`` lines
naming the file.

A Keras 3 ``.keras`` is a zip of ``config.json`` (the graph), ``model.weights.h5`` and
``metadata.json``; tf_keras cannot load it (``batch_shape``, ``DTypePolicy`` objects, ...).
:func:`import_keras3` rebuilds the graph out of tf_keras layers:

1. :mod:`.check`: ``config.json`` is checked before any Keras 3 code runs; every layer
   tf_keras cannot reproduce exactly is refused by name (:class:`UnsupportedKeras3Model`,
   all problems on one line), and each layer config is translated.
2. :mod:`.weights`: Keras 3 loads the file in this same process (Keras 3 and tf_keras are
   separate packages and coexist; ``TF_USE_LEGACY_KERAS`` only steers ``tf.keras``), or,
   if it cannot, the h5 is read directly.
3. :mod:`.graph`: the graph runs on tf_keras tensors with nested models inlined; the
   weights are copied by variable name and shape; the result is checked against Keras 3's
   own predictions on a random batch.
"""

from pathlib import Path

from slimlab.kit.keras3.check import (SUPPORTED_LAYERS, Keras3ImportError, UnsupportedKeras3Model, check,
                                      importable_config, is_tf_keras_version, keras_version_of, one_line,
                                      read_archive)
from slimlab.kit.keras3.graph import ImportReport, import_keras3, import_keras3_with_report
from slimlab.kit.training import keras as tf_keras

__all__ = ["SUPPORTED_LAYERS", "ImportReport", "Keras3ImportError", "UnsupportedKeras3Model", "check",
           "import_keras3", "import_keras3_with_report", "importable_config", "keras_version_of", "load_any_keras",
           "one_line", "read_archive"]

H5_SUFFIXES = (".h5", ".hdf5")


def load_any_keras(path):
    """A tf_keras model from a Keras 3 or tf_keras ``.keras``, a tf_keras ``.h5``, or a Keras SavedModel folder."""
    path = Path(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
            raise Keras3ImportError("a folder without saved_model.pb: not a SavedModel", path)
        if not (path / "keras_metadata.pb").is_file():
            raise Keras3ImportError(
                "a SavedModel without Keras metadata (keras_metadata.pb), so not a Keras model: it was written by "
                "tf.saved_model.save or Keras 3's model.export, not tf_keras's model.save; import the .keras "
                "file instead, or convert it to TFLite/ONNX and import that", path)
    elif path.suffix.lower() in H5_SUFFIXES:
        _refuse_keras3_h5(path)
    elif not is_tf_keras_version(keras_version_of(path)):
        return import_keras3(path)
    try:
        model = tf_keras().models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds for a file it cannot load; named, on one line
        raise Keras3ImportError(f"tf_keras could not load it: {one_line(exc)}", path) from exc
    if not isinstance(model, tf_keras().Model):
        raise Keras3ImportError(f"tf_keras loaded a {type(model).__name__}, not a Keras model", path)
    return model


def _refuse_keras3_h5(path: Path) -> None:
    """A ``.h5`` written by Keras 3 (its legacy format): tf_keras cannot read its config; the .keras can be."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            version = str(h5.attrs.get("keras_version", ""))
    except OSError as exc:
        raise Keras3ImportError(f"not an HDF5 file (truncated or corrupt?): {one_line(exc)}", path) from None
    if version.startswith("3."):
        raise Keras3ImportError(f"written by Keras {version} in its legacy h5 format, which slimlab does not "
                                "import; save the model as .keras (model.save('model.keras')) and import that", path)
