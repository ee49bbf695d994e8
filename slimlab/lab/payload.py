"""The device payload as one file: the ``slimlab_payload`` package plus every format's runtime adapter.

The python runner pushes a zipapp (``.pyz``) that ``python3`` runs directly. It is
built the same way every time (sorted entries, fixed timestamps), so its sha256
names exactly the code that ran; the record carries it. A format registered by a
third-party plugin brings its adapter along: nothing in slimlab lists formats.
"""

import hashlib
import io
import json
import os
import zipfile
from functools import cache
from importlib.resources import files
from pathlib import Path

from slimlab import registry
from slimlab.atomic import write_bytes

_EPOCH = (1980, 1, 1, 0, 0, 0)
_MAIN = b"from slimlab_payload.main import main\n\nmain()\n"


def _package_sources() -> dict[str, bytes]:
    """The payload package's own modules (not its runtimes/: those come from the registered formats)."""
    root = files("slimlab_payload")
    return {f"slimlab_payload/{entry.name}": entry.read_bytes()
            for entry in root.iterdir() if entry.name.endswith(".py")}


def entries() -> dict[str, bytes]:
    found = {"__main__.py": _MAIN, **_package_sources()}
    found["slimlab_payload/runtimes/__init__.py"] = b'"""Runtime adapters, one per format."""\n'
    for name, fmt in sorted(registry.formats().items()):
        if fmt.runtime_adapter is None:
            continue
        found[f"slimlab_payload/runtimes/{name}.py"] = fmt.runtime_adapter.read_bytes()
        found[f"slimlab_payload/runtimes/{name}.options.json"] = json.dumps(
            fmt.options_schema(), sort_keys=True, indent=1).encode()
    return found


def build() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries().items()):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slimlab"


@cache
def payload() -> tuple[Path, str]:
    """The payload file (written once per content to the user's cache) and its sha256."""
    data = build()
    digest = hashlib.sha256(data).hexdigest()
    path = cache_dir() / f"slimlab-payload-{digest[:16]}.pyz"
    if not path.is_file():
        write_bytes(path, data)
    return path, digest
