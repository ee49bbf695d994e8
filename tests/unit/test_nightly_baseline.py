"""The nightly's baseline is named after the whole artifact, not its main file.

Two ncnn models of different recipes with one architecture share their ``.param`` (the main file) but not their
``.bin``: each must get a baseline of its own, with its own weights and its own accuracy, so that tonight's
numbers are compared with that series' own accepted ones.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from slimlab import nightly
from slimlab.artifacts import TEST_OUTPUTS, Artifact, sha256_file
from slimlab.atomic import npz_bytes
from slimlab.errors import ArtifactError
from slimlab.lab import verdict
from slimlab.records import FileInfo, Sidecar, Size, Step
from tests.support import DIGITS

PARAM = b"7767517\n3 3\nInput data 0 1 data\nInnerProduct fc 1 1 data logits 0=10 1=1 2=640\n"


def ncnn_artifact(folder: Path, weights: bytes, accuracy: float, recipe: str) -> Path:
    """An ncnn artifact on disk, as the workflow leaves it: files, then the sidecar that lists them."""
    folder.mkdir(parents=True)
    (folder / "model.ncnn.param").write_bytes(PARAM)
    (folder / "model.ncnn.bin").write_bytes(weights)
    (folder / TEST_OUTPUTS).write_bytes(npz_bytes({"logits": np.full((4, 10), accuracy, np.float32)}))
    paths = [folder / name for name in ("model.ncnn.param", "model.ncnn.bin", TEST_OUTPUTS)]
    Sidecar(format="ncnn", files={p.name: FileInfo(bytes=p.stat().st_size, sha256=sha256_file(p)) for p in paths},
            lineage=[Step(stage="train", params={"recipe": recipe}), Step(stage="convert.ncnn", params={})],
            dataset=DIGITS, input_shape=[1, 8, 8, 1], accuracy={"val": accuracy, "test": accuracy},
            quality={"task": "classification", "val": {"accuracy": accuracy}, "test": {"accuracy": accuracy}},
            size=Size(bytes=len(PARAM) + len(weights), gzip_bytes=1)).save(folder / "artifact.json")
    return folder / "artifact.json"


@pytest.fixture
def two_recipes(tmp_path) -> dict:
    """Recipes ``a`` and ``b``: one architecture (a byte-identical .param), other weights, other accuracies."""
    sidecars = {"a": ncnn_artifact(tmp_path / "results/a/ncnn", b"\x01" * 2560, 0.91, "a"),
                "b": ncnn_artifact(tmp_path / "results/b/ncnn", b"\x02" * 2560, 0.72, "b")}
    plan = {"deployables": [{"recipe": recipe, "format": "ncnn", "sidecar": str(sidecar), "records": []}
                            for recipe, sidecar in sidecars.items()],
            "inventory": "devices", "bench": {}}
    return {"sidecars": sidecars, "plan": plan, "state": tmp_path / "results/nightly"}


def test_artifacts_that_share_their_main_file_get_baselines_of_their_own(two_recipes):
    a, b = (Artifact.load(two_recipes["sidecars"][recipe]) for recipe in "ab")
    assert a.sha256 == b.sha256  # the premise: the main file (.param) is the same

    baseline = nightly.Baseline(two_recipes["state"])
    baseline.accept(two_recipes["plan"], "first", None)
    accepted = baseline.load()
    entries = {key: accepted["artifacts"][f"{key}|ncnn"] for key in "ab"}
    for recipe, source in (("a", a), ("b", b)):
        copy = Artifact.load(entries[recipe]["sidecar"])
        assert copy.info.accuracy == source.info.accuracy
        assert (copy.dir / "model.ncnn.bin").read_bytes() == (source.dir / "model.ncnn.bin").read_bytes()
        # Tonight's unchanged artifact against its own baseline: nothing changed, so no regression.
        assert nightly.exact_changes(source, copy) == (verdict.OK, [])
    assert entries["a"]["sidecar"] != entries["b"]["sidecar"]
    # b's accuracy against a's accepted one: the task says higher is better, so lower is a regression.
    assert nightly.exact_changes(b, Artifact.load(entries["a"]["sidecar"])) == (
        verdict.REGRESSION, ["val accuracy 0.9100 → 0.7200", "test accuracy 0.9100 → 0.7200"])
    for recipe, source in (("a", a), ("b", b)):
        digest = nightly.artifact_digest(source)
        assert entries[recipe]["digest"] == digest == Path(entries[recipe]["sidecar"]).parent.name


def test_the_digest_covers_every_file_and_the_sidecar(two_recipes):
    a = Artifact.load(two_recipes["sidecars"]["a"])
    files = {name: info.sha256 for name, info in a.info.files.items()}
    sidecar = hashlib.sha256(a.sidecar.read_bytes()).hexdigest()
    expected = hashlib.sha256(json.dumps({"files": files, "sidecar": sidecar}, sort_keys=True).encode()).hexdigest()
    assert nightly.artifact_digest(a) == expected
    # Only the sidecar differs (another accuracy): another baseline.
    b = Path(str(two_recipes["sidecars"]["a"]).replace("/a/", "/a2/"))
    ncnn_artifact(b.parent, b"\x01" * 2560, 0.5, "a")
    assert nightly.artifact_digest(Artifact.load(b)) != nightly.artifact_digest(a)


def test_accepting_again_keeps_the_copy_and_a_changed_copy_is_named(two_recipes):
    baseline = nightly.Baseline(two_recipes["state"])
    first = baseline.accept(two_recipes["plan"], "first", None)
    second = baseline.accept(two_recipes["plan"], "again", "run-2")
    assert first["artifacts"] == second["artifacts"]
    assert len(list((two_recipes["state"] / "baseline").iterdir())) == 2
    copy = Path(second["artifacts"]["a|ncnn"]["sidecar"])
    info = json.loads(copy.read_text())
    info["accuracy"]["test"] = 0.99  # someone edits the accepted numbers by hand
    copy.write_text(json.dumps(info))
    with pytest.raises(ArtifactError, match="changed since it was accepted"):
        nightly.accepted_artifact(copy, second["artifacts"]["a|ncnn"]["digest"])
    # Accepting again replaces the damaged copy.
    baseline.accept(two_recipes["plan"], "repaired", None)
    assert nightly.accepted_artifact(copy, second["artifacts"]["a|ncnn"]["digest"]).info.accuracy["test"] == 0.91


def test_a_baseline_index_of_the_old_format_asks_to_accept_again(two_recipes):
    state = two_recipes["state"]
    state.mkdir(parents=True)
    old = {"accepted": "2025-01-01T00:00:00+00:00", "by": "someone@lab", "reason": "v1", "run": None,
           "artifacts": {"a|ncnn": {"sidecar": str(state / "baseline/abc/artifact.json"), "sha256": "abc"}}}
    (state / "baseline.json").write_text(json.dumps(old))
    with pytest.raises(ArtifactError) as raised:
        nightly.Baseline(state).load()
    message = str(raised.value)
    assert "\n" not in message and "slimlab nightly accept" in message and "baseline.json" in message
