"""A calibration split, held out of training, is what post-training quantization calibrates on (issue 22)."""

import numpy as np

from slimlab import data
from slimlab.kit.training import representative_samples


def test_the_calibration_split_is_held_out_and_quantization_draws_from_it():
    x = np.arange(200, dtype=np.float32).reshape(200, 1)  # each image is its own index
    y = np.arange(200) % 4
    splits = data.split(x, y, seed=1, val_fraction=0.1, test_fraction=0.2, stratify=True, calibration_fraction=0.1)
    parts = {name: set(getattr(splits, f"x_{name}")[:, 0].tolist()) for name in ("train", "val", "test", "calibration")}
    assert splits.sizes() == {"train": 120, "val": 20, "test": 40, "calibration": 20}
    assert set.union(*parts.values()) == set(range(200)) and sum(map(len, parts.values())) == 200
    drawn = {float(batch[0][0, 0]) for batch in representative_samples(splits, 50, seed=0)()}
    assert drawn == parts["calibration"]  # all 20, none from training


def test_without_one_quantization_calibrates_on_training_images():
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    splits = data.split(x, None, seed=1, val_fraction=0.1, test_fraction=0.2, stratify=False)
    assert splits.x_calibration is None and "calibration" not in splits.sizes()
    drawn = {float(batch[0][0, 0]) for batch in representative_samples(splits, 30, seed=0)()}
    assert len(drawn) == 30 and drawn <= set(splits.x_train[:, 0].tolist())
