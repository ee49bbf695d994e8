"""slimlab: compress models with a Snakemake DAG of pluggy stages, measure them on devices."""

import os

# tfmot only works with Keras 2 (tf_keras); this must be set before TensorFlow loads.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from slimlab.hookspecs import hookimpl  # noqa: E402

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
