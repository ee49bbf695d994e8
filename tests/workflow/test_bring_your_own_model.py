"""Issue 10, end to end: your own model files and your own data, through the real workflow.

One checkout-like folder is built once: an ``npz`` of digits written here; a Keras 3
model (residual Add, BatchNormalization, DepthwiseConv2D) trained and saved as ``.keras``
by Keras 3 in this process; a tf_keras model saved as ``.h5``, as a SavedModel folder,
and converted to ``.tflite`` and ``.onnx``. Each is imported by a recipe, converted where
the converters allow, and benchmarked on this host.
A second folder trains on an ``image_folder`` of PNGs, where one recipe's compress step
fails. Bad data and a Keras-only stage after a TFLite import each give one line.
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
}
# What each recipe's model is deployed as: itself, or through a converter that takes it; "-": none does (the
# plan says why). The ONNX, ncnn and MNN converters take TFLite, but not an int8 one: the plan refuses each
# such pair (quantize.int8 makes an integer model), with the converter's reason.
DEPLOYED = {
    "k3_pruned_int8": {"tflite": "itself", "mnn": "refused", "onnx": "refused", "ncnn": "refused"},
    "tflite": {"tflite": "itself", "mnn": "convert.mnn", "onnx": "convert.onnx", "ncnn": "convert.ncnn"},
    "onnx": {"onnx": "itself", "ncnn": "convert.ncnn", "mnn": "convert.mnn", "tflite": "-"},
    **{recipe: {fmt: f"convert.{fmt}" for fmt in FORMATS} for recipe in ("k3", "h5", "savedmodel")},
}


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "SLIMLAB_LOCK_DIR": str(root / "locks")}  # other checkouts' benchmarks on this host do not hold ours up
    return subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)


def planned(root: Path) -> dict[str, set[str]]:
    """What ``snakemake -n`` would run: each rule's jobs, by their first output."""
    done = snakemake(root, "-n")
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, set[str]] = {}
    for rule, output in re.findall(r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    output: ([^,\n]+)", done.stdout, re.M):
        found.setdefault(rule, set()).add(output)
    return found


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


class NoAliases(yaml.SafeDumper):
    """slimlab refuses YAML aliases, which PyYAML writes for an object used twice (a shared recipe step)."""

    def ignore_aliases(self, data):
        return True


def write_config(path: Path, config: dict) -> Path:
    base = {"formats": ["tflite"], "lab": {"inventory": "devices.yaml", "devices": ["localhost"]},
            "bench": {"option_sets": {"default": {}}}}
    path.write_text(yaml.dump({**base, **config}, Dumper=NoAliases, sort_keys=False))
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
    """The folder with the npz data and every model file, run once."""
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
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "keras3": k3, "x": x, "y": y}


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
                assert (recipe, fmt) != ("onnx", "tflite") or ": onnx2tf, the maintained" in row["error"]
                continue
            if how == "refused":
                assert row["status"] == "unsupported", (recipe, fmt)
                assert row["error"].startswith(f"convert.{fmt}: ") and "quantized TFLite model" in row["error"]
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
    with np.load(imported / "outputs.test.npz") as stored:
        (logits,) = (stored[name] for name in stored.files)
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=1e-4)
    accuracy = float(np.mean(want.argmax(-1) == splits.y_test))
    assert sidecar["accuracy"]["test"] == pytest.approx(accuracy)
    assert (summary[summary["recipe"] == "k3"]["accuracy"] - accuracy).abs().max() < 0.02
    pruned = summary.set_index(["recipe", "format"]).loc[("k3_pruned_int8", "tflite")]
    assert pruned["steps"].startswith("import(path=models/k3.keras) → prune.magnitude(")
    assert pruned["zero_fraction"] > 0.3


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


def test_editing_the_imported_file_reruns_its_descendants_and_nothing_else(npz_lab, summary):
    root = npz_lab["root"]
    assert not planned(root), "the run left jobs to do (did slimlab's code change since?)"
    model, weights = npz_lab["keras3"], npz_lab["keras3"].get_weights()
    model.set_weights([w * 1.01 for w in weights])
    model.save(root / K3_MODEL)  # the same model, re-saved with other weights
    model.set_weights(weights)
    rerun = planned(root)
    # import (the source rule), prune and quantize, the k3 recipe's 4 conversions (the pruned int8 one has none:
    # refused by the plan), a benchmark job for each of the 5 deployables, and the report and its check; nothing of
    # the other recipes.
    assert {rule: len(outputs) for rule, outputs in rerun.items()} == {
        "train": 1, "compress": 2, "convert": 4, "bench_device_localhost": 5, "report": 1, "steps_succeeded": 1}
    k3_import = Path(summary.set_index(["recipe", "format"]).loc[("k3", "tflite"), "artifact"]).parent
    below = f"/{k3_import.relative_to('results/artifacts')}/"  # its artifacts' and their records' folders
    assert all(below in output for rule, outputs in rerun.items() for output in outputs
               if not output.startswith("results/report/"))


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


@pytest.fixture(scope="module")
def image_lab(images, tmp_path_factory) -> dict:
    """A folder training on the PNGs; its second recipe asks prune.structured to prune the logits."""
    train = {"train": {"model_params": {"width": 4, "dense": 8}, "epochs": 30, "batch_size": 16, "learning_rate": 0.01}}
    root = checkout(tmp_path_factory.mktemp("image-lab"), {
        "dataset": {"name": "image_folder", "params": {"path": str(images), "size": [12, 12]}},
        "model": "cnn",
        "recipes": {"small": [train], "broken": [train, {"prune.structured": {"layers": ["logits"]}}]},
    })
    done = snakemake(root)
    return {"run": done, "summary": pd.read_csv(root / "results/report/summary.csv").set_index("recipe")}


def test_an_image_folder_trains_and_is_measured_end_to_end(image_lab):
    row = image_lab["summary"].loc["small"]
    assert row["status"] == "ok" and row["format"] == "tflite" and row["latency_median_ms"] > 0
    assert row["accuracy"] > 0.8 and not row["parity_failed"]
    assert row["steps"].startswith("train(") and row["steps"].endswith("→ convert.tflite")


def test_a_failed_compress_step_keeps_the_other_rows_and_fails_the_run(image_lab):
    done = image_lab["run"]
    assert done.returncode != 0
    assert "slimlab: error: 1 recipe step(s) failed; the report shows them" in done.stderr
    summary = image_lab["summary"]
    assert list(summary.index) == ["small", "broken"] and summary.loc["small", "status"] == "ok"
    broken = summary.loc["broken"]
    assert broken["status"] == "stage_failed"
    assert broken["error"].startswith("skipped: prune.structured: layers: 'logits' produces the model's outputs")


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


def test_a_keras3_layer_tf_keras_cannot_reproduce_is_refused_by_name_when_the_config_loads(npz_lab, tmp_path):
    import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.LayerNormalization(name="ln")(keras.layers.Conv2D(4, 3, activation="hard_sigmoid", name="c")(inp))
    keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(x))).save(tmp_path / "ln.keras")
    config = write_config(tmp_path / "config.yaml", {
        "dataset": {"name": "npz", "params": {"path": "data/digits.npz"}},
        "recipes": {"mine": [{"import": {"path": str(tmp_path / "ln.keras")}}]},
    })
    assert one_error_line(slimlab("validate", str(config), cwd=npz_lab["root"])) == (
        f"recipes.mine[0]: invalid params for stage 'import': path: {tmp_path / 'ln.keras'}: layer 'c' (Conv2D) "
        "uses activation 'hard_sigmoid', which tf_keras does not compute the same way; layer 'ln' is a "
        "keras.layers.LayerNormalization, which slimlab's Keras 3 import does not support; re-save the model "
        "with tf_keras, or convert it to ONNX/TFLite and import that")


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
        "wrong x shape": ((x[:, :, :, None, None], y), "images have shape (400, 8, 8, 1, 1); expected (N, H, W, C)"),
        # its own test split, in which one class has no samples
        "no test samples": ((x, y, x[y != 9], y[y != 9]), "class 9 has no test samples"),
    }
    for case, (arrays, message) in cases.items():
        np.savez(tmp_path / "bad.npz", x=arrays[0], y=arrays[1])
        params = {"path": "bad.npz"}
        if len(arrays) == 4:
            np.savez(tmp_path / "test.npz", x=arrays[2], y=arrays[3])
            params["test_path"] = "test.npz"
        error = one_error_line(run_step(tmp_path, {"name": "npz", "params": params}, train))
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
    images_12px = {"name": "image_folder", "params": {"path": str(images), "size": [12, 12]}}
    error = one_error_line(run_step(tmp_path, images_12px, {"import": {"path": str(npz_lab["root"] / K3_MODEL)}}))
    assert error == (f"import: {npz_lab['root'] / K3_MODEL} takes input [None, 8, 8, 1], "
                     "the data set gives [None, 12, 12, 3]")
