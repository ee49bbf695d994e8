"""digits: scikit-learn's 1,797 8x8 digits, a smaller data set for quick experiments and tests."""

import numpy as np

from slimlab import hookimpl
from slimlab.data import Dataset


def load_digits(params):
    """1,797 8x8 digits (one channel) from scikit-learn."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return (bunch.images[..., None] / 16.0).astype(np.float32), bunch.target


@hookimpl
def register_datasets(register):
    register(Dataset("digits", load_digits))
