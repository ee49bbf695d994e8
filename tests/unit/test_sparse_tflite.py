"""convert.tflite's sparse encoding: index + value storage that shrinks the deployed file of a pruned model."""

import numpy as np
import pytest

from slimlab import formats
from slimlab.artifacts import write
from slimlab.data import load_spec
from slimlab.stages import run_step
from tests.support import DIGITS


@pytest.fixture(scope="module")
def pruned(tiny_artifacts, tmp_path_factory):
    model = formats.get("keras").load(tiny_artifacts["keras"].dir)
    model.set_weights([np.where(np.abs(w) < np.quantile(np.abs(w), 0.85), 0, w) if w.ndim > 1 else w
                       for w in model.get_weights()])
    return write(tmp_path_factory.mktemp("pruned"), "keras", model, lineage=[], dataset=DIGITS,
                 splits=load_spec(DIGITS), metrics={})


def test_sparse_encoding_shrinks_the_file_and_keeps_the_model(pruned, tmp_path):
    def convert(sparse):
        return run_step({"stage": "convert.tflite", "params": {"sparse": sparse}, "dataset": DIGITS},
                        pruned.sidecar, tmp_path / str(sparse) / "artifact.json").info

    dense, sparse = convert(False), convert(True)
    assert sparse.size.bytes < 0.7 * dense.size.bytes
    assert sparse.params == dense.params  # same count, same zeros: only the storage differs
    assert sparse.accuracy == dense.accuracy
    assert sparse.metrics["parity"]["passed"]
