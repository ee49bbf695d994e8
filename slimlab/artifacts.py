"""Artifacts: a model file plus a JSON sidecar that describes and verifies it.

The sidecar is written last, atomically, and records the model file's sha256,
so a sidecar on disk means a complete model; a truncated or swapped model file
is caught on load with a message that names it.
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


def measure(kind: str, model, path: Path, splits) -> dict:
    """Size, parameters, sparsity and held-out accuracy of a model, as stored in the sidecar."""
    fmt = FORMATS[kind]
    raw = path.read_bytes()
    weights = fmt.weights(model)
    count = int(sum(w.size for w in weights))
    nonzero = int(sum(np.count_nonzero(w) for w in weights))
    accuracy = {
        split: float(np.mean(np.argmax(fmt.predict(model, x), axis=-1) == y))
        for split, x, y in (("val", splits.x_val, splits.y_val), ("test", splits.x_test, splits.y_test))
    }
    return {
        "size": {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0))},
        "params": {"count": count, "nonzero": nonzero},
        "sparsity": 1.0 - nonzero / count if count else 0.0,
        "accuracy": accuracy,
    }


def write(out_dir: Path, kind: str, model, *, lineage: list[dict], dataset: dict, splits, extra: dict) -> Artifact:
    """Store ``model`` under ``out_dir``, measure it, then commit the sidecar atomically."""
    fmt = FORMATS[kind]
    path = Path(out_dir) / fmt.filename
    fmt.save(model, path)
    meta = {
        "slimlab_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": kind,
        "format": kind,
        "files": {fmt.filename: {"bytes": path.stat().st_size, "sha256": sha256_file(path)}},
        "lineage": lineage,
        "dataset": {**dataset, "sizes": splits.sizes()},
        **measure(kind, model, path, splits),
        "metrics": extra,
    }
    sidecar = Path(out_dir) / SIDECAR
    write_json(sidecar, meta)
    return Artifact(sidecar, meta)
