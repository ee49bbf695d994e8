"""The nightly history: every run's rows, with the run's metadata, in an append-only Parquet store.

``<store>/runs/<run id>.parquet`` holds one run; a run is appended by writing its
file under a temporary name and renaming it into place, so a run killed mid-append
leaves nothing behind (or a stray temporary file that reading ignores), never half a
run or a duplicate. ``<store>/store.json`` names the schema version. A store of
another version, or a run file that cannot be read, is a clear error and is never
rewritten: the store is only ever added to.
"""

import json
from pathlib import Path

import pandas as pd

from slimlab.atomic import atomic_path, write_json
from slimlab.errors import ArtifactError

STORE_VERSION = 1
MANIFEST = "store.json"


class History:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def _check(self) -> None:
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            if self.runs.is_dir() and any(self.runs.iterdir()):
                raise ArtifactError(f"{self.root}: a history store without {MANIFEST}; not slimlab's, or damaged")
            return
        try:
            version = json.loads(manifest.read_text()).get("version")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise ArtifactError(f"{manifest}: not a valid history manifest ({exc}); it is left as it is") from None
        if version != STORE_VERSION:
            raise ArtifactError(f"{self.root}: history store version {version}, this slimlab reads {STORE_VERSION}; "
                                "point --history at a new folder (the old store is left as it is)")

    def append(self, run_id: str, rows: pd.DataFrame) -> Path:
        """Add one run; refuses a run id that is already stored."""
        self._check()
        path = self.runs / f"{run_id}.parquet"
        if path.exists():
            raise ArtifactError(f"{path}: run {run_id} is already in the history")
        if not (self.root / MANIFEST).is_file():
            write_json(self.root / MANIFEST, {"version": STORE_VERSION, "format": "one Parquet file per run"})
        with atomic_path(path) as tmp:
            rows.to_parquet(tmp, index=False)
        return path

    def read(self) -> pd.DataFrame:
        """Every stored run's rows, oldest first."""
        self._check()
        # A run killed mid-append leaves at most a hidden temporary file: not part of the history.
        files = sorted(p for p in self.runs.glob("*.parquet") if not p.name.startswith(".")) if self.runs.is_dir() else []
        frames = []
        for path in files:
            try:
                frames.append(pd.read_parquet(path))
            except Exception as exc:  # pyarrow raises several kinds for a damaged file; name it either way
                raise ArtifactError(f"{path}: cannot read this history run ({exc}); move it aside to go on") from None
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
