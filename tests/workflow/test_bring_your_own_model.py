"""Issue 10, end to end: your own model files and your own data, through the real workflow.

One checkout-like folder is built once: an ``npz`` of digits written here; a Keras 3
model (residual Add, BatchNormalization, DepthwiseConv2D) trained and saved as ``.keras``
by Keras 3 in this process; a tf_keras model saved as ``.h5``, as a SavedModel folder,
and converted to ``.tflite`` and ``.onnx``. Each is imported by a recipe, converted where
the converters allow, and benchmarked on this host; one recipe's compress step fails.
A second folder trains on an ``image_folder`` of PNGs. Bad data and a Keras-only stage
after a TFLite import each give one line.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.support import REPO, slimlab

pytestmark = pytest.mark.slow

FORMATS = ["tflite", "onnx", "ncnn", "mnn"]
K3_MODEL = "models/k3.keras"
RECIPES = {
    "k3_pruned_int8": [{"import": {"path": K3_MODEL}}, {"prune.magnitude": {"sparsity": 0.5}}, "quantize.int8"],
    "k3": [{"import": {"path": K3_MODEL}}],
    "h5": [{"import": {"path": "models/tfk.h5"}}],
    "savedmodel": [{"import": {"path": "models/saved"}}],
    "tflite": [{"import": {"path": "models/tfk.tflite"}}],
    "onnx": [{"import": {"path": "models/tfk.onnx"}}],
    # the tf_keras model is a chain, so prune.structured gets as far as refusing to prune its outputs
    "broken": [{"import": {"path": "models/tfk.h5"}}, {"prune.structured": {"layers": ["logits"]}}],
}
# What each recipe's model is deployed as: itself, or through a converter that takes it; "-": none does.
# MNN's converter takes TFLite, but not an int8 one: that conversion fails, with MNN's reason.
DEPLOYED = {
    "k3_pruned_int8": {"tflite": "itself", "mnn": "fails", "onnx": "-", "ncnn": "-"},
    "tflite": {"tflite": "itself", "mnn": "convert.mnn", "onnx": "-", "ncnn": "-"},
    "onnx": {"onnx": "itself", "ncnn": "convert.ncnn", "mnn": "convert.mnn", "tflite": "-"},
    **{recipe: {fmt: f"convert.{fmt}" for fmt in FORMATS} for recipe in ("k3", "h5", "savedmodel")},
}


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SLIMLAB_LOCK_DIR": str(root / "locks")}  # other checkouts' benchmarks on this host do not hold ours up
    return subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)


def jobs(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1] if "Job stats:" in output else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def checkout(root: Path, config: dict) -> Path:
    """A folder like a clone of the repo: the workflow linked in, the test's own config and inventory."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "profiles"):
        (root / name).symlink_to(REPO / name)
    inventory = {"devices": {"localhost": {
        "transport": "local", "runner": "python", "runtimes": FORMATS, "workdir": str(root / "lab"),
        "python": {"lock": str(root / "device.lock")},
    }}}
    (root / "devices.yaml").write_text(yaml.safe_dump(inventory))
    (root / "config").mkdir(exist_ok=True)
    write_config(root / "config/config.yaml", config)
    return root


def write_config(path: Path, config: dict) -> Path:
    base = {"formats": ["tflite"], "lab": {"inventory": "devices.yaml", "devices": ["localhost"]},
            "bench": {"option_sets": {"default": {}}}}
    path.write_text(yaml.safe_dump({**base, **config}, sort_keys=False))
    return path


def digits(per_class: int = 40):
    """The first ``per_class`` of each of scikit-learn's 8x8 digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = np.concatenate([np.flatnonzero(bunch.target == label)[:per_class] for label in range(10)])
    return (bunch.images[keep] / 16.0).astype(np.float32), bunch.target[keep]


def keras3_model(x, y):
    """A small residual model built and trained with Keras 3 (not tf_keras)."""
    import keras

    assert keras.__version__.startswith("3.")
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((8, 8, 1), name="image")
    # BN momentum 0.8: one short epoch is enough for the moving statistics the deployed model uses
    h = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    h = L.ReLU()(L.BatchNormalization(momentum=0.8, name="stem_bn")(h))
    r = L.ReLU()(L.BatchNormalization(momentum=0.8)(L.DepthwiseConv2D(3, padding="same", name="dw")(h)))
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(L.Add()([h, r]))
    model = keras.Model(inp, L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(h)))
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[..., None], y, epochs=1, batch_size=8, verbose=0)
    return model


def tf_keras_files(x, y, models: Path) -> None:
    """A small tf_keras CNN, trained, saved as .h5 and as a SavedModel, and exported to .tflite and .onnx."""
    from slimlab.kit.export import keras_to_onnx, keras_to_tflite
    from slimlab.kit.training import keras

    tfk = keras()
    tfk.utils.set_random_seed(0)
    L = tfk.layers
    model = tfk.Sequential([tfk.Input((8, 8, 1)), L.Conv2D(8, 3, activation="relu", name="conv"),
                            L.MaxPooling2D(), L.Flatten(), L.Dense(16, activation="relu", name="fc"),
                            L.Dense(10, name="logits")])
    model.compile(tfk.optimizers.Adam(0.01), tfk.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[..., None], y, epochs=3, batch_size=16, verbose=0)
    model.save(models / "tfk.h5")
    model.save(models / "saved", save_format="tf")
    (models / "tfk.tflite").write_bytes(keras_to_tflite(model))
    (models / "tfk.onnx").write_bytes(keras_to_onnx(model))


@pytest.fixture(scope="module")
def npz_lab(tmp_path_factory) -> dict:
    """The folder with the npz data and every model file, run once (it exits non-zero: 'broken' fails)."""
    root = tmp_path_factory.mktemp("byom")
    x, y = digits()
    (root / "data").mkdir()
    np.savez(root / "data/digits.npz", x=x, y=y)
    (root / "models").mkdir()
    k3 = keras3_model(x, y)
    k3.save(root / K3_MODEL)
    tf_keras_files(x, y, root / "models")
    config = {
        "dataset": {"name": "npz", "params": {"path": "data/digits.npz"}, "seed": 3},
        "stage_defaults": {"prune.magnitude": {"epochs": 1, "batch_size": 32},
                           "quantize.int8": {"representative_samples": 20}},
        "recipes": RECIPES,
        "formats": FORMATS,
    }
    checkout(root, config)
    done = snakemake(root)
    return {"root": root, "run": done, "keras3": k3, "x": x, "y": y}


@pytest.fixture(scope="module")
def summary(npz_lab) -> pd.DataFrame:
    return pd.read_csv(npz_lab["root"] / "results/report/summary.csv")


def test_every_import_is_measured_in_each_format_the_converters_allow(summary):
    for recipe, formats in DEPLOYED.items():
        rows = summary[summary["recipe"] == recipe].set_index("format")
        assert sorted(rows.index) == sorted(FORMATS), recipe
        for fmt, how in formats.items():
            row = rows.loc[fmt]
            if how == "-":
                assert row["status"] == "unsupported" and "does not take" in row["error"], (recipe, fmt)
                continue
            if how == "fails":
                assert row["status"] == "convert_failed", (recipe, fmt)
                assert "cannot convert quantized TFLite models" in row["error"]
                continue
            assert row["status"] == "ok", (recipe, fmt, row.get("error"))
            assert row["steps"].endswith(how) if how != "itself" else "convert." not in row["steps"]
            assert row["latency_median_ms"] > 0 and isinstance(row["runtime"], str), (recipe, fmt)
            # accuracy on the test split, measured in this format's runtime when the artifact was made
            assert 0.0 <= row["accuracy"] <= 1.0 and (recipe.startswith("k3") or row["accuracy"] > 0.6), row
            if how.startswith("convert.") and "quantize" not in row["steps"]:  # a float conversion
                assert not row["parity_failed"] and row["parity_agreement"] >= 0.995, (recipe, fmt)


def test_the_imported_keras3_model_computes_what_keras3_computes(npz_lab, summary):
    """On the run's own test split, in tf_keras and in every runtime it was converted to."""
    from slimlab import data

    root = npz_lab["root"]
    imported = root / Path(summary.set_index(["recipe", "format"]).loc[("k3", "tflite"), "artifact"]).parent
    sidecar = json.loads((imported / "artifact.json").read_text())
    assert [step["stage"] for step in sidecar["lineage"]] == ["import"]
    splits = data.load_spec({**sidecar["dataset"], "params": {"path": str(root / "data/digits.npz")}})
    want = npz_lab["keras3"].predict(splits.x_test, verbose=0)
    np.testing.assert_allclose(np.load(imported / "logits.test.npy"), want, atol=1e-4, rtol=1e-4)
    accuracy = float(np.mean(want.argmax(-1) == splits.y_test))
    assert sidecar["accuracy"]["test"] == pytest.approx(accuracy)
    assert (summary[summary["recipe"] == "k3"]["accuracy"] - accuracy).abs().max() < 0.02
    pruned = summary.set_index(["recipe", "format"]).loc[("k3_pruned_int8", "tflite")]
    assert pruned["steps"].startswith("import(path=models/k3.keras) → prune.magnitude(")
    assert pruned["zero_fraction"] > 0.3


def test_a_failed_compress_step_keeps_the_other_rows_and_fails_the_run(npz_lab, summary):
    done = npz_lab["run"]
    assert done.returncode != 0
    assert "1 recipe step(s) failed" in done.stderr
    broken = summary[summary["recipe"] == "broken"]
    assert len(broken) == len(FORMATS) and (broken["status"] == "stage_failed").all()
    assert broken["error"].str.contains("'logits' produces the model's outputs; its channels cannot be pruned").all()
    others = summary[summary["recipe"] != "broken"]
    assert set(others["status"]) == {"ok", "unsupported", "convert_failed"}  # as the first test details


def test_a_keras_only_stage_after_a_tflite_import_is_refused_when_the_config_loads(npz_lab, tmp_path):
    root = npz_lab["root"]
    config = write_config(tmp_path / "config.yaml", {
        "dataset": {"name": "npz", "params": {"path": str(root / "data/digits.npz")}},
        "recipes": {"bad": [{"import": {"path": str(root / "models/tfk.tflite")}}, "prune.magnitude"]},
        "lab": {"inventory": str(root / "devices.yaml"), "devices": ["localhost"]},
    })
    done = slimlab("validate", str(config), cwd=root)
    assert done.returncode == 2
    assert done.stderr.strip() == ("slimlab: error: recipes.bad[1]: stage 'prune.magnitude' takes keras; "
                                   "the step before it produces tflite")


def test_editing_the_imported_file_reruns_its_descendants_and_nothing_else(npz_lab):
    root = npz_lab["root"]
    before = jobs(snakemake(root, "-n").stdout)
    assert before == {"steps_succeeded": 1, "all": 1}  # only the check that fails while 'broken' fails
    model = npz_lab["keras3"]
    model.set_weights([w * 1.01 for w in model.get_weights()])
    model.save(root / K3_MODEL)
    done = snakemake(root, "-n")
    assert done.returncode == 0, done.stderr[-2000:]
    # import (the source rule), prune and quantize, the k3 recipe's 4 conversions and the pruned one's mnn,
    # and a benchmark for each of the 6 deployables; nothing of the other recipes.
    assert jobs(done.stdout) == {"train": 1, "compress": 2, "convert": 5, "bench_device_localhost": 6,
                                 "report": 1, "steps_succeeded": 1, "all": 1}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three classes of 12x12 PNGs: a bright band at a class-specific place, on noise."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images") / "train"
    rng = np.random.default_rng(0)
    for label, name in enumerate(["circle", "square", "star"]):
        (folder / name).mkdir(parents=True)
        for i in range(24):
            pixels = rng.uniform(0, 80, (12, 12, 3))
            pixels[4 * label:4 * label + 4] += 170
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{i}.png")
    return folder


def test_an_image_folder_trains_and_is_measured_end_to_end(images, tmp_path):
    root = checkout(tmp_path / "work", {
        "dataset": {"name": "image_folder", "params": {"path": str(images), "size": [12, 12]}},
        "model": "cnn",
        "recipes": {"small": [{"train": {"model_params": {"width": 4, "dense": 8}, "epochs": 8, "batch_size": 16}}]},
    })
    done = snakemake(root)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = pd.read_csv(root / "results/report/summary.csv").to_dict("records")
    assert row["status"] == "ok" and row["format"] == "tflite" and row["latency_median_ms"] > 0
    assert row["accuracy"] > 0.8 and not row["parity_failed"]
    assert row["steps"].startswith("train(") and row["steps"].endswith("→ convert.tflite")


# --- bad data: one line each --------------------------------------------------------------------------


def run_step(root: Path, dataset: dict, stage: dict) -> subprocess.CompletedProcess:
    """One recipe step as the workflow's jobs run it."""
    (name, params), = stage.items()
    step = {"stage": name, "params": params,
            "dataset": {"seed": 42, "val_fraction": 0.1, "test_fraction": 0.2, **dataset}}
    return slimlab("run-step", "--step", json.dumps(step), "--output", str(root / "out/artifact.json"), cwd=root)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("slimlab: error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return errors[0].removeprefix("slimlab: error: ")


def test_a_missing_data_file_is_named_when_the_config_loads(npz_lab, tmp_path):
    config = write_config(tmp_path / "config.yaml", {
        "dataset": {"name": "npz", "params": {"path": "data/nowhere.npz"}},
        "recipes": {"r": [{"import": {"path": K3_MODEL}}]},
    })
    assert one_error_line(slimlab("validate", str(config), cwd=npz_lab["root"])) == \
        "dataset.params: data/nowhere.npz does not exist"


def test_bad_data_fails_its_step_with_one_line(npz_lab, images, tmp_path):
    x, y = npz_lab["x"], npz_lab["y"]
    train = {"train": {"epochs": 1, "model_params": {"width": 4, "dense": 8}}}
    cases = {
        "negative labels": ((x, np.where(y == 3, -1, y)), "labels out of range: -1 (class indices start at 0)"),
        "no test samples": ((np.concatenate([x[y != 9], x[y == 9][:2]]), np.concatenate([y[y != 9], [9, 9]])),
                            "class 9 has no test samples"),
        "wrong x shape": ((x[:, :, :, None, None], y), "images have shape (400, 8, 8, 1, 1); expected (N, H, W, C)"),
    }
    for case, ((cx, cy), message) in cases.items():
        np.savez(tmp_path / "bad.npz", x=cx, y=cy)
        error = one_error_line(run_step(tmp_path, {"name": "npz", "params": {"path": "bad.npz"}}, train))
        assert message in error, (case, error)

    garbage = tmp_path / "images"
    for name in ("circle", "square", "star"):
        (garbage / name).mkdir(parents=True)
        for image in sorted((images / name).iterdir())[:12]:
            (garbage / name / image.name).write_bytes(image.read_bytes())
    (garbage / "star/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing an image has")
    error = one_error_line(run_step(tmp_path, {"name": "image_folder", "params": {"path": str(garbage)}}, train))
    assert error.startswith(f"dataset.params: {garbage / 'star/broken.png'} is not an image that can be decoded")

    # The data is fine but the model wants another input shape: the import names both.
    error = one_error_line(run_step(tmp_path, {"name": "image_folder", "params": {"path": str(images), "size": [12, 12]}},
                                    {"import": {"path": str(npz_lab["root"] / K3_MODEL)}}))
    assert error == (f"import: {npz_lab['root'] / K3_MODEL} takes input [None, 8, 8, 1], "
                     "the data set gives [None, 12, 12, 3]")
