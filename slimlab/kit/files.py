"""Content hashes of the files a plugin reads (data sets, imported models): part of what it builds."""

import hashlib
import os
from pathlib import Path

from slimlab.errors import ConfigError


def existing(path: str | Path, what: str) -> Path:
    """``path`` if it exists, else one ConfigError line naming it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{what}: {path} does not exist")
    return path


def _files(path: Path) -> list[tuple[str, Path]]:
    """(name, file) for a file; for a folder, every file below it by relative name, sorted.

    Symlinked sub-folders are followed (the data sets read through them too), except ones
    that point back up the tree.
    """
    if not path.is_dir():
        return [(path.name, path)]
    found, above = [], {str(path): {os.path.realpath(path)}}
    for folder, dirs, names in os.walk(path, followlinks=True):
        chain = above.pop(folder)
        dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(folder, d)) not in chain]
        above.update({os.path.join(folder, d): chain | {os.path.realpath(os.path.join(folder, d))} for d in dirs})
        found += [(os.path.relpath(os.path.join(folder, n), path), Path(folder, n)) for n in names]
    return sorted((name, file) for name, file in found if file.is_file())


def content_sha256(*paths: str | Path | None, what: str) -> str:
    """The sha256 of files, or of folders' files (relative names and contents); None paths are skipped.

    Each path and each file is delimited (count, name, size), so no two layouts hash alike.
    """
    digest = hashlib.sha256()
    for path in filter(None, paths):
        files = _files(existing(path, what))
        digest.update(f"{len(files)} files\0".encode())
        for name, file in files:
            digest.update(f"{name}\0{file.stat().st_size}\0".encode())
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()
