"""Artifacts: a model's files plus a typed sidecar (:class:`slimlab.records.Sidecar`) that describes and verifies them.

The sidecar is written last, atomically, and records every file's size and
sha256, so a sidecar on disk means a complete model; a truncated, missing or
swapped file is caught on load with a message that names it.

Beside the model, ``outputs.test.npz`` keeps the model's outputs on the test split,
under the names of the recipe's source model (the one trained or imported), so a
later conversion checks parity against them without loading the source in its own
framework, and every artifact's fidelity is measured against the source's.

A step that fails leaves a *failed* sidecar instead (``status: failed`` and the
step's one-line message, no model files): the report shows it and the rest of
the run goes on. A step whose input failed is failed too, without running.
"""

import gzip
import hashlib
import json
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from slimlab import formats, tasks
from slimlab.atomic import npz_bytes, write_bytes
from slimlab.errors import ArtifactError
from slimlab.records import FileInfo, ParamCount, Sidecar, Size, Step, load
from slimlab.tasks import output_specs
from slimlab_payload.evaluate import OutputMismatch, align, fidelities, match

SIDECAR = "artifact.json"
TEST_OUTPUTS = "outputs.test.npz"
SKIPPED = "skipped:"  # the error of a step that did not run because its input had failed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_sidecar(path: str | Path) -> Sidecar:
    return load(Sidecar, path, "artifact sidecar")


@dataclass(frozen=True)
class Artifact:
    """A verified artifact on disk."""

    sidecar: Path
    info: Sidecar

    @classmethod
    def load(cls, sidecar: str | Path) -> "Artifact":
        sidecar = Path(sidecar)
        info = read_sidecar(sidecar)
        if info.status != "ok":
            raise ArtifactError(f"{sidecar}: this step is {info.status}: {info.error}")
        artifact = cls(sidecar, info)
        artifact.verify()
        return artifact

    @property
    def dir(self) -> Path:
        return self.sidecar.parent

    @property
    def kind(self) -> str:
        return self.info.format

    @property
    def format(self) -> formats.Format:
        return formats.get(self.kind)

    @property
    def paths(self) -> list[Path]:
        """Every file of the model, the main one first (ncnn has a .param and a .bin)."""
        return self.format.paths(self.dir)

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def sha256(self) -> str:
        return self.info.files[self.format.filenames[0]].sha256

    @property
    def lineage(self) -> list[Step]:
        return self.info.lineage

    def verify(self) -> None:
        """Every file the format needs, and the test logits, exist with the sidecar's size and sha256."""
        for name in (*self.format.filenames, TEST_OUTPUTS):
            path = self.dir / name
            expected = self.info.files.get(name)
            if expected is None:
                raise ArtifactError(f"{self.sidecar}: the sidecar lists no {name}, which a {self.kind} artifact has")
            if not path.is_file():
                raise ArtifactError(f"{path}: model file is missing")
            size = path.stat().st_size
            if size != expected.bytes:
                raise ArtifactError(f"{path}: model file is {size} bytes, sidecar says {expected.bytes} (truncated?)")
            if sha256_file(path) != expected.sha256:
                raise ArtifactError(f"{path}: model file's sha256 does not match its sidecar (corrupt or replaced)")

    @cached_property
    def model(self):
        return self.format.load(self.dir)

    @cached_property
    def test_outputs(self) -> dict[str, np.ndarray]:
        """The model's outputs on the test split, as measured when it was made, under the source model's names."""
        with np.load(self.dir / TEST_OUTPUTS, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}


def read_outputs(folder: Path) -> dict[str, np.ndarray]:
    """The test outputs stored in an artifact folder (the recipe's source model's, for fidelity)."""
    try:
        with np.load(Path(folder) / TEST_OUTPUTS, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{Path(folder) / TEST_OUTPUTS}: the source model's outputs cannot be read: {exc}") from None


def measure(fmt: formats.Format, model, folder: Path, splits, task, reference: dict | None) -> tuple[dict, dict]:
    """Size, parameters, share of zeros, the task's metrics and the fidelity to ``reference`` (the source model's
    test outputs; None: this is the source), as stored in the sidecar; and the test outputs under the source's
    names.

    Parameter counts are None where the format's stored weights cannot be decoded.
    """
    raw = b"".join(path.read_bytes() for path in fmt.paths(folder))
    weights = fmt.weights(model)
    count = None if weights is None else int(sum(w.size for w in weights))
    nonzero = None if weights is None else int(sum(np.count_nonzero(w) for w in weights))
    outputs = {split: fmt.predict(model, x) for split, x in (("val", splits.x_val), ("test", splits.x_test))}
    try:
        shapes = reference if reference is not None else outputs["test"]
        names = match(np, shapes, outputs["test"])  # on the test split, where the source's outputs are known
        outputs = {split: align(np, shapes, found, names) for split, found in outputs.items()}
    except OutputMismatch as exc:
        raise ArtifactError(f"{folder}: its outputs do not match the source model's: {exc}") from None
    found = task_scores(task, splits, outputs)
    return {
        "size": Size(bytes=len(raw), gzip_bytes=len(gzip.compress(raw, compresslevel=9, mtime=0))),
        "params": ParamCount(count=count, nonzero=nonzero),
        "zero_fraction": 1.0 - nonzero / count if count else (None if weights is None else 0.0),
        "macs": fmt.macs(model),
        "accuracy": ({split: found[split]["accuracy"] for split in ("val", "test")}
                     if found and "accuracy" in found["test"] else None),
        "quality": found,
        "fidelity": None if reference is None else {
            "outputs": fidelities(np, reference, outputs["test"]),
            "agreement": task[0].agreement(task[1], reference, outputs["test"])},
    }, outputs["test"]


def task_scores(task, splits, outputs: dict) -> dict | None:
    """The task's metrics on the validation and test splits; None for unlabelled data."""
    if not splits.labelled:
        return None
    return {"task": task[0].name, "val": task_metrics(task, outputs["val"], splits.y_val),
            "test": task_metrics(task, outputs["test"], splits.y_test)}


def task_metrics(task, outputs: dict, labels) -> dict[str, float]:
    """The task's metrics of one split's outputs (by the source model's names) against its labels."""
    found, params = task
    names = found.reads(params, output_specs(outputs))
    return {metric: float(value) for metric, value in
            found.metrics(params, {name: outputs[name] for name in names}, labels).items()}


def source_outputs(lineage: list[Step]) -> dict | None:
    """The test outputs of the recipe's source model (its first step's artifact), or None if ``lineage`` is just
    that step."""
    return read_outputs(Path(lineage[0].artifact)) if len(lineage) > 1 else None


def write(out_dir: Path, kind: str, model, *, lineage: list[Step], dataset: dict, splits, metrics: dict,
          timing: dict | None = None) -> Artifact:
    """Store ``model`` under ``out_dir``, measure it (scored by the data set spec's task), then commit the sidecar
    atomically."""
    out_dir = Path(out_dir)
    fmt = formats.get(kind)
    fmt.save(model, out_dir)
    measured, test_outputs = measure(fmt, model, out_dir, splits, tasks.task(dataset.get("task")),
                                     source_outputs(lineage))
    write_bytes(out_dir / TEST_OUTPUTS, npz_bytes(test_outputs))
    paths = [*fmt.paths(out_dir), out_dir / TEST_OUTPUTS]
    info = Sidecar(
        format=kind,
        files={p.name: FileInfo(bytes=p.stat().st_size, sha256=sha256_file(p)) for p in paths},
        lineage=lineage,
        dataset={**dataset, "sizes": splits.sizes()},
        input_shape=None if splits.input_shapes else [1, *splits.input_shape],  # several: the model says
        metrics=metrics,
        timing=timing,
        **measured,
    )
    sidecar = out_dir / SIDECAR
    info.save(sidecar)
    return Artifact(sidecar, info)


def write_failed(sidecar: Path, kind: str, lineage: list[Step], dataset: dict, error: str,
                 status: str = "failed") -> Sidecar:
    """Record that the last step of ``lineage`` made no model, why, and the environment it failed in.

    ``status`` is ``failed``, or ``unsupported`` for a known limit (:class:`slimlab.errors.Unsupported`). A step
    that failed itself (not one skipped below a failure) also says on stderr how to retry it.
    """
    from slimlab import identity  # it loads the plugins: only a failure needs it

    info = Sidecar(status=status, format=kind, error=error, environment=identity.environment(), lineage=lineage,
                   dataset=dataset)
    info.save(sidecar)
    if status == "failed" and not error.startswith(SKIPPED):
        print(f"slimlab: step failed: {Path(sidecar).parent}: {error}", file=sys.stderr)
        print(f"slimlab: {retry_hint(sidecar)}", file=sys.stderr)
    return info


def retry_hint(sidecar: str | Path) -> str:
    """How to retry a failed step, for the failure line and the README."""
    return (f"the next run retries it if the installed packages or plugins change; after any other fix, "
            f"rerun with --forcerun {sidecar}")


def stale_failures(sidecars: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """The failed (or unsupported) steps among ``sidecars`` that failed in another environment than this
    process's (:func:`slimlab.identity.environment`), or in an unrecorded one, with their errors. A failure in an
    unchanged environment is not among them: a plain rerun does not retry it. A missing or unreadable sidecar
    is left to Snakemake and the job that reads it."""
    from slimlab import identity

    stale = []
    for path, info in _not_ok(sidecars).items():
        error = str(info.get("error") or "")
        if not error.startswith(SKIPPED) and info.get("environment") != identity.environment():
            stale.append((path, error))
    return stale


def forget(stale: list[tuple[Path, str]], sidecars: Iterable[str | Path]) -> None:
    """Delete the ``stale`` failed sidecars and those of the steps skipped below them, so that Snakemake reruns
    those steps (it would not rerun a step whose sidecar alone is missing while the ones below it are there)."""
    for path in _not_ok(sidecars):
        if any(path == retried or retried.parent in path.parents for retried, _ in stale):
            path.unlink(missing_ok=True)


def _not_ok(sidecars: Iterable[str | Path]) -> dict[Path, dict]:
    """The failed and unsupported sidecars among ``sidecars``, parsed (most are ok: those are not)."""
    found = {}
    for path in map(Path, sidecars):
        try:
            raw = path.read_bytes()
            info = json.loads(raw) if b'"failed"' in raw or b'"unsupported"' in raw else None
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and info.get("status") in ("failed", "unsupported"):
            found[path] = info
    return found


def last_error(log: Path) -> str:
    """The one-line ``slimlab: error:`` message of a failed job, else the log's last line."""
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("slimlab: error: ") for line in lines if line.startswith("slimlab: error: ")]
    return (errors or lines or ["the step exited without a message"])[-1]
