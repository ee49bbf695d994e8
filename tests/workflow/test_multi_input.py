"""A model of two inputs (an image and a feature vector), end to end: data keyed by the model's input names,
import from each file kind, int8 in TFLite and ONNX, every format that takes it, parity and a device's own
evaluation, which feeds every input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from slimlab import data, formats
from slimlab.errors import ConfigError
from slimlab.plugins.stages import import_model
from tests import zoo
from tests.workflow.test_bring_your_own_model import FORMATS, checkout, snakemake

pytestmark = pytest.mark.slow

IMPORTS = {"tfk": "two_input-tfk.keras", "tflite": "two_input.tflite", "onnx": "two_input.onnx"}


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("two-input")
    model = zoo.two_input()
    for kind in ("tf_keras", "tflite", "onnx"):
        zoo.save(model, root / "models", kind)
    (root / "data").mkdir()
    zoo.two_input_data(root / "data/two_input.npz")
    recipes = {name: [{"import": {"path": f"models/{path}"}}] for name, path in IMPORTS.items()}
    recipes["int8"] = [{"import": {"path": "models/two_input-tfk.keras"}}, {"quantize.int8": {"io": "float"}}]
    recipes["onnx_int8"] = [{"import": {"path": "models/two_input.onnx"}}, "quantize.onnx"]
    checkout(root, {"dataset": {"name": "npz", "params": {"path": "data/two_input.npz", "x_key": ["image", "extra"]}},
                    "recipes": recipes, "formats": FORMATS,
                    "bench": {"threads": [1], "warmup": 1, "runs": 3, "min_seconds": 0.01,
                              "option_sets": {"default": {}}}})
    inventory = yaml.safe_load((root / "devices.yaml").read_text())
    inventory["devices"]["localhost"]["python"]["evaluate"] = 24  # the device runs test samples, both inputs each
    (root / "devices.yaml").write_text(yaml.safe_dump(inventory))
    done = snakemake(root)
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.read_csv(root / "results/report/summary.csv")


def test_every_import_reaches_every_format_that_takes_two_inputs(summary):
    for recipe in IMPORTS:
        rows = summary[summary["recipe"] == recipe].set_index("format")
        assert rows.loc["ncnn", "status"] == "unsupported" and "2 inputs" in rows.loc["ncnn", "error"]
        for fmt in ("tflite", "onnx", "mnn"):
            if (recipe, fmt) == ("onnx", "tflite"):
                assert rows.loc[fmt, "status"] == "unsupported"
                continue
            row = rows.loc[fmt]
            assert row["status"] == "ok", (recipe, fmt, row["error"])
            assert row["latency_median_ms"] > 0 and 0 <= row["accuracy"] <= 1
            assert row["device_agreement"] == 1.0 and not row["device_parity_failed"], (recipe, fmt)
            if "convert." in row["steps"]:
                assert not row["parity_failed"] and row["fidelity_snr_db"] > 40, (recipe, fmt)


def test_int8_calibrates_on_both_inputs_in_tflite_and_onnx(summary):
    for recipe, fmt in (("int8", "tflite"), ("onnx_int8", "onnx")):
        row = summary[(summary["recipe"] == recipe) & (summary["format"] == fmt)].iloc[0]
        assert row["status"] == "ok", (recipe, row["error"])
        assert 10 < row["fidelity_snr_db"] < 80 and row["device_agreement"] >= 0.9, (recipe, row["fidelity_snr_db"])


def test_data_and_model_that_disagree_on_an_input_are_one_line(tmp_path):
    path = zoo.save(zoo.two_input(), tmp_path, "tf_keras")
    specs = formats.get("keras").input_specs(import_model.load(path, "keras"))
    params = import_model.ImportParams(path=str(path))
    x = {"image": np.zeros((9, zoo.SIZE, zoo.SIZE, 3), np.float32), "extra": np.zeros((9, 8), np.float32)}

    def splits(inputs):
        return data.split(inputs, None, 0, 0.2, 0.2, stratify=False)

    import_model.check_inputs(specs, splits(x), params, path)
    cases = [({"image": x["image"], "other": x["extra"]},
              r"takes inputs \['extra', 'image'\], the data set gives \['image', 'other'\]"),
             ({**x, "extra": x["extra"][:, :4]}, r"takes input 'extra' of shape \[None, 8\], the data set gives "
                                                  r"\[None, 4\]"),
             (x["image"], r"takes 2 inputs \(image, extra\), the data set gives one")]
    for inputs, message in cases:
        with pytest.raises(ConfigError, match=message):
            import_model.check_inputs(specs, splits(inputs), params, path)
