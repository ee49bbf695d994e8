"""slimlab init: a starter folder that validates as soon as the data and the model are in place."""

import numpy as np
from sklearn.datasets import load_digits

from slimlab.kit.training import keras
from tests.support import slimlab


def test_the_scaffold_validates_once_data_and_model_are_there(tmp_path):
    folder = tmp_path / "exp"
    done = slimlab("init", str(folder))
    assert done.returncode == 0, done.stderr
    assert (folder / "config/config.yaml").is_file() and (folder / "devices/lab.yaml").is_file()
    missing = slimlab("validate", "config/config.yaml", cwd=folder)
    assert missing.returncode == 2 and "data/train.npz does not exist" in missing.stderr
    digits = load_digits()
    np.savez(folder / "data/train.npz", x=digits.images / 16.0, y=digits.target)
    layers = keras().layers
    keras().Sequential([layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(10)]).save(folder / "models/model.keras")
    ok = slimlab("validate", "config/config.yaml", cwd=folder)
    assert ok.returncode == 0, ok.stderr
    assert "3 recipes" in ok.stdout and "10 classes" in ok.stdout
    again = slimlab("init", str(folder))
    assert again.returncode == 2 and "already exists" in again.stderr
