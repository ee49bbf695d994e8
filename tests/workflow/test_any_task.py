"""Models that are not single-output classifiers, end to end through the workflow (issue 22).

Three checkout-like folders, each one experiment of :mod:`tests.zoo`'s models:

- a two-head model (class logits + box), imported from each file kind, on images without labels
  (task ``fidelity``): compressed by structured pruning, fine-tuned on its own outputs, and int8;
- an SSD-style detector with anchors (task ``detection``, boxes as labels);
- a segmenter (task ``segmentation``, masks as labels).

Each goes through import → every format → bench on this host, with parity per output.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests import zoo
from tests.workflow.test_bring_your_own_model import FORMATS, checkout, snakemake

pytestmark = pytest.mark.slow

BENCH = {"threads": [1], "warmup": 1, "runs": 3, "min_seconds": 0.01, "option_sets": {"default": {}}}
TWO_HEAD = "models/two_head-tfk.keras"
IMPORTS = {"k3": "models/two_head-k3.keras", "tfk": TWO_HEAD, "saved": "models/two_head-saved",
           "tflite": "models/two_head.tflite", "onnx": "models/two_head.onnx"}
PRUNE = {"fraction": 0.5, "batch_size": 32}


def run(root: Path, config: dict) -> pd.DataFrame:
    checkout(root, {**config, "formats": FORMATS, "bench": BENCH})
    done = snakemake(root)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = pd.read_csv(root / "results/report/summary.csv")
    summary.attrs["root"] = root
    return summary


@pytest.fixture(scope="module")
def two_head(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("two-head")
    model = zoo.two_head()
    for kind in zoo.KINDS:
        zoo.save(model, root / "models", kind)
    (root / "data").mkdir()
    zoo.two_head_data(root / "data/two_head.npz")
    recipes = {name: [{"import": {"path": path}}] for name, path in IMPORTS.items()}
    recipes.update({
        "pruned_raw": [{"import": {"path": TWO_HEAD}}, {"prune.structured": {**PRUNE, "epochs": 0}}],
        "pruned_tuned": [{"import": {"path": TWO_HEAD}}, {"prune.structured": {**PRUNE, "epochs": 4}}],
        "int8": [{"import": {"path": TWO_HEAD}}, {"quantize.int8": {"representative_samples": 20}}],
    })
    return run(root, {"dataset": {"name": "npz", "params": {"path": "data/two_head.npz", "y_key": None}},
                      "task": {"name": "fidelity"}, "recipes": recipes})


def test_every_import_of_a_two_output_model_reaches_every_format_with_parity_per_output(two_head):
    for recipe in IMPORTS:
        rows = two_head[two_head["recipe"] == recipe].set_index("format")
        for fmt in FORMATS:
            row = rows.loc[fmt]
            if (recipe, fmt) == ("onnx", "tflite"):
                assert row["status"] == "unsupported" and "onnx2tf" in row["error"]
                continue
            assert row["status"] == "ok", (recipe, fmt, row["error"])
            assert row["latency_median_ms"] > 0 and row["task"] == "fidelity" and np.isnan(row["accuracy"])
            if "convert." in row["steps"]:  # both outputs, matched back by name or value, agree with the source's
                assert not row["parity_failed"] and row["parity_agreement"] >= 0.995, (recipe, fmt)
                assert row["snr_db:class_logits"] > 40 and row["snr_db:box"] > 40, (recipe, fmt)


def test_without_labels_compression_fine_tunes_on_the_source_models_outputs(two_head):
    rows = two_head[two_head["format"] == "tflite"].set_index("recipe")
    raw, tuned = rows.loc["pruned_raw"], rows.loc["pruned_tuned"]
    assert raw["status"] == tuned["status"] == "ok" and tuned["params"] < rows.loc["tfk", "params"]
    assert tuned["fidelity_snr_db"] > raw["fidelity_snr_db"] + 3, (raw["fidelity_snr_db"], tuned["fidelity_snr_db"])
    pruned = two_head.attrs["root"] / Path(tuned["artifact"]).parent / "artifact.json"  # the step below convert.tflite
    history = json.loads(pruned.read_text())["metrics"]["history"]
    assert "val_loss" in history and "accuracy" not in history  # the outputs' squared error, without labels
    assert rows.loc["int8", "status"] == "ok" and 10 < rows.loc["int8", "fidelity_snr_db"] < 80


def one_import(root: Path, model, kind: str, make_data, task: dict) -> pd.DataFrame:
    """One recipe that imports ``model`` saved as ``kind``, on labelled data from ``make_data``."""
    path = zoo.save(model, root / "models", kind).relative_to(root)
    (root / "data").mkdir()
    make_data(root / "data/labelled.npz")
    return run(root, {"dataset": {"name": "npz", "params": {"path": "data/labelled.npz"}}, "task": task,
                      "recipes": {model.name: [{"import": {"path": str(path)}}]}})


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> pd.DataFrame:
    anchors = {"decoder": "anchors", "boxes": "boxes", "scores": "scores", "input_size": [zoo.SIZE, zoo.SIZE],
               "strides": [4, 8], "anchors_per_cell": list(zoo.ANCHORS), "scale": zoo.SIZE, "score_threshold": 0.05}
    return one_import(tmp_path_factory.mktemp("detector"), zoo.ssd_detector(), "tf_keras", zoo.detection_data,
                      {"name": "detection", "params": anchors})


def test_a_detector_is_scored_by_map_in_every_format(detector):
    assert (detector["status"] == "ok").all(), detector[["format", "error"]]
    assert ((detector["test_map50"] >= 0) & (detector["test_map50"] <= 1)).all()
    assert (detector["test_map50_95"] <= detector["test_map50"]).all()
    # every row is a conversion of the Keras model; box agreement with it is the parity agreement
    assert not detector["parity_failed"].any() and (detector["parity_agreement"] == 1.0).all()
    assert (detector["snr_db:boxes"] > 40).all() and (detector["snr_db:scores"] > 40).all()


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> pd.DataFrame:
    return one_import(tmp_path_factory.mktemp("segmenter"), zoo.segmenter(), "onnx", zoo.segmentation_data,
                      {"name": "segmentation"})


def test_a_segmenter_is_scored_by_miou_where_a_converter_takes_it(segmenter):
    rows = segmenter.set_index("format")
    assert rows.loc["tflite", "status"] == "unsupported"  # from ONNX: no maintained converter installs
    for fmt in ("onnx", "ncnn", "mnn"):
        assert rows.loc[fmt, "status"] == "ok", rows.loc[fmt, "error"]
        assert 0 <= rows.loc[fmt, "test_miou"] <= 1 and 0 <= rows.loc[fmt, "test_pixel_accuracy"] <= 1
    assert abs(rows.loc["ncnn", "test_miou"] - rows.loc["onnx", "test_miou"]) < 0.01
