"""train's `seed`: recipes that differ only in it are independent runs; without it, the data set's seed."""

import numpy as np

from tests.support import DIGITS

TINY = {"epochs": 1, "batch_size": 64, "model_params": {"width": 4, "dense": 8}}


def weights(tmp_path, name: str, **params) -> list[np.ndarray]:
    from slimlab.stages import run_step

    artifact = run_step({"stage": "train", "params": {**TINY, **params}, "dataset": DIGITS}, None,
                        tmp_path / name / "artifact.json")
    return artifact.model.get_weights()


def test_the_seed_defaults_to_the_data_sets_and_another_one_trains_another_model(tmp_path):
    default, same, other = (weights(tmp_path, "default"), weights(tmp_path, "same", seed=DIGITS["seed"]),
                            weights(tmp_path, "other", seed=DIGITS["seed"] + 1))
    assert all(np.array_equal(a, b) for a, b in zip(default, same))
    assert not all(np.array_equal(a, b) for a, b in zip(default, other))
