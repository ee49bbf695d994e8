"""An imported Keras model that ends in a softmax is fine-tuned on logits: the softmax goes, the classes stay."""

import numpy as np
import pytest

from slimlab.kit.training import keras
from slimlab.stages import run_step
from tests.support import DIGITS


@pytest.mark.parametrize("head", ["dense-activation", "softmax-layer"])
def test_a_final_softmax_is_removed_and_the_predictions_stay(tmp_path, head):
    layers = keras().layers
    body = [layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(16, activation="relu")]
    top = [layers.Dense(10, activation="softmax")] if head == "dense-activation" else [layers.Dense(10), layers.Softmax()]
    original = keras().Sequential(body + top)
    original.save(tmp_path / "with-softmax.h5")
    imported = run_step({"stage": "import", "params": {"path": str(tmp_path / "with-softmax.h5")}, "dataset": DIGITS},
                        None, tmp_path / "imported/artifact.json")
    x = np.random.default_rng(0).random((32, 8, 8, 1), np.float32)
    logits = imported.model.predict(x, verbose=0)
    assert not np.allclose(logits.sum(axis=1), 1.0, atol=1e-3)  # logits now, not probabilities
    assert (logits.argmax(axis=1) == original.predict(x, verbose=0).argmax(axis=1)).all()
    assert imported.info.metrics["imported"]["softmax_removed"]
