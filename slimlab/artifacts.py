"""Artifacts: a model file plus a JSON sidecar that describes and verifies it.

The sidecar is written last, atomically, and records the model file's sha256,
so a sidecar on disk means a complete model; a truncated or swapped model file
is caught on load with a message that names it.

A conversion that fails leaves a *failed* sidecar instead (``status: failed``
and the converter's message, no model files): the report shows that
(artifact, format) as failed and the rest of the run goes on.
"""

import datetime as dt
import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from slimlab import __version__
from slimlab.atomic import write_json
from slimlab.errors import ArtifactError
from slimlab.formats import FORMATS

SIDECAR = "artifact.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A verified artifact on disk. ``meta`` is the parsed sidecar."""

    sidecar: Path
    meta: dict

    @classmethod
    def load(cls, sidecar: str | Path) -> "Artifact":
        sidecar = Path(sidecar)
        try:
            meta = json.loads(sidecar.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{sidecar}: artifact sidecar not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{sidecar}: sidecar is not valid JSON ({exc})") from None
        if meta.get("status") == "failed":
            raise ArtifactError(f"{sidecar}: this conversion failed: {meta['error']}")
        if meta.get("kind") not in FORMATS:
            raise ArtifactError(f"{sidecar}: unknown artifact kind {meta.get('kind')!r}")
        artifact = cls(sidecar, meta)
        artifact.verify()
        return artifact

    @property
    def dir(self) -> Path:
        return self.sidecar.parent

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def path(self) -> Path:
        return self.dir / FORMATS[self.kind].filename

    @property
    def paths(self) -> list[Path]:
        """Every file of the model, the main one first (ncnn has a .param and a .bin)."""
        return [self.dir / name for name in FORMATS[self.kind].filenames]

    @property
    def sha256(self) -> str:
        return self.meta["files"][FORMATS[self.kind].filename]["sha256"]

    @property
    def lineage(self) -> list[dict]:
        return self.meta["lineage"]

    def verify(self) -> None:
        for name, expected in self.meta["files"].items():
            path = self.dir / name
            if not path.is_file():
                raise ArtifactError(f"{path}: model file is missing")
            size = path.stat().st_size
            if size != expected["bytes"]:
                raise ArtifactError(f"{path}: model file is {size} bytes, sidecar says {expected['bytes']} (truncated?)")
            if sha256_file(path) != expected["sha256"]:
                raise ArtifactError(f"{path}: model file's sha256 does not match its sidecar (corrupt or replaced)")

    @cached_property
    def model(self):
        return FORMATS[self.kind].load(self.path)


def failure(sidecar: str | Path) -> str | None:
    """The converter's message if ``sidecar`` records a failed conversion, else None."""
    meta = json.loads(Path(sidecar).read_text())
    return meta["error"] if meta.get("status") == "failed" else None


def measure(kind: str, model, paths: list[Path], splits) -> dict:
    """Size, parameters, sparsity and held-out accuracy of a model, as stored in the sidecar.

    Parameter counts are None where the format's stored weights cannot be decoded.
    """
    fmt = FORMATS[kind]
    raw = b"".join(path.read_bytes() for path in paths)
    weights = fmt.weights(model)
    count = None if weights is None else int(sum(w.size for w in weights))
    nonzero = None if weights is None else int(sum(np.count_nonzero(w) for w in weights))
    accuracy = {
        split: float(np.mean(np.argmax(fmt.predict(model, x), axis=-1) == y))
        for split, x, y in (("val", splits.x_val, splits.y_val), ("test", splits.x_test, splits.y_test))
    }
    return {
        "size": {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0))},
        "params": {"count": count, "nonzero": nonzero},
        "sparsity": 1.0 - nonzero / count if count else (None if weights is None else 0.0),
        "accuracy": accuracy,
    }


def write(out_dir: Path, kind: str, model, *, lineage: list[dict], dataset: dict, splits, extra: dict) -> Artifact:
    """Store ``model`` under ``out_dir``, measure it, then commit the sidecar atomically."""
    fmt = FORMATS[kind]
    path = Path(out_dir) / fmt.filename
    fmt.save(model, path)
    paths = [Path(out_dir) / name for name in fmt.filenames]
    meta = {
        "slimlab_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "format": kind,
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in paths},
        "lineage": lineage,
        "dataset": {**dataset, "sizes": splits.sizes()},
        # NHWC with a batch of one; formats without shape metadata (ncnn) need it to run.
        "input_shape": [1, *splits.input_shape],
        **measure(kind, model, paths, splits),
        "metrics": extra,
    }
    sidecar = Path(out_dir) / SIDECAR
    write_json(sidecar, meta)
    return Artifact(sidecar, meta)


def write_failed(sidecar: Path, step: dict, input_sidecar: Path, error: str) -> None:
    """Record that ``step`` could not convert ``input_sidecar``: no model, the converter's message."""
    from slimlab import registry

    stage = registry.lookup(registry.stages(), step["stage"], "stage")
    parent = json.loads(Path(input_sidecar).read_text())
    write_json(Path(sidecar), {
        "slimlab_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "status": "failed",
        "kind": stage.output,
        "format": stage.output,
        "error": error,
        "lineage": [*parent.get("lineage", []), {"stage": step["stage"], "params": step["params"]}],
        "files": {},
    })


def last_error(log: Path) -> str:
    """The one-line ``slimlab: error:`` message of a failed job, else the log's last line."""
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("slimlab: error: ") for line in lines if line.startswith("slimlab: error: ")]
    return (errors or lines or ["the converter exited without a message"])[-1]

