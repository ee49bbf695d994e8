"""blobs: Gaussian blobs, one per class, drawn as tiny one-channel images."""

import numpy as np
from pydantic import Field

from slimlab.api import Dataset, DatasetParams, hookimpl


class BlobParams(DatasetParams):
    samples: int = Field(300, ge=30)
    classes: int = Field(3, ge=2, le=10)


def load_blobs(params: BlobParams):
    """Gaussian blobs as 6x6 images: (images NHWC float32, integer labels)."""
    rng = np.random.default_rng(0)
    y = np.arange(params.samples) % params.classes
    centres = rng.normal(size=(params.classes, 6, 6, 1))
    return (centres[y] + 0.3 * rng.normal(size=(params.samples, 6, 6, 1))).astype(np.float32), y


@hookimpl
def register_datasets(register):
    register(Dataset("blobs", load_blobs, BlobParams))
