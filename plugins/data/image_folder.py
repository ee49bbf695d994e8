"""image_folder: your own images, one sub-folder per class (``cats/``, ``dogs/``, ...).

``{name: image_folder, params: {path: data/train, size: [64, 64], color: rgb, test_path: data/test}}``.
Classes are the sub-folders in sorted order (label 0 first). Every image is resized to
``size`` (height, width), converted to ``color``, and scaled to ``range``: ``unit``
[0, 1], ``symmetric`` [-1, 1], or ``pixels`` [0, 255]. A file that will not decode is
an error that names it. ``test_path`` is a folder with the same classes.
"""

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from slimlab import hookimpl
from slimlab.data import Dataset, DatasetParams
from slimlab.errors import ConfigError
from slimlab.kit.files import content_sha256, existing

Pixels = Annotated[int, Field(ge=1, le=4096)]
RANGES = {"unit": (1 / 255, 0.0), "symmetric": (2 / 255, -1.0), "pixels": (1.0, 0.0)}


class ImageFolderParams(DatasetParams):
    path: str = Field(min_length=1, description="a folder with one sub-folder of images per class")
    size: tuple[Pixels, Pixels] = Field((32, 32), description="height and width every image is resized to")
    color: Literal["rgb", "grayscale"] = Field("rgb", description="rgb: 3 channels; grayscale: 1")
    range: Literal["unit", "symmetric", "pixels"] = Field("unit", description="[0,1], [-1,1] or [0,255]")
    test_path: str | None = Field(None, min_length=1, description="a folder with the same classes: the test split")


def classes(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise ConfigError(f"dataset.params: {folder} is not a folder (give a folder with one sub-folder per class)")
    found = sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise ConfigError(f"dataset.params: {folder} has no class sub-folders")
    return found


def read(path: str, names: list[str] | None, params: ImageFolderParams) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = existing(path, "dataset.params")
    names = names or classes(folder)
    if classes(folder) != names:
        raise ConfigError(f"dataset.params: {folder} has classes {classes(folder)}, expected {names}")
    mode, (scale, shift) = "RGB" if params.color == "rgb" else "L", RANGES[params.range]
    images, labels = [], []
    for label, name in enumerate(names):
        files = sorted(p for p in (folder / name).iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ConfigError(f"dataset.params: class folder {folder / name} holds no images")
        for file in files:
            try:
                with Image.open(file) as image:
                    pixels = image.convert(mode).resize(params.size[::-1], Image.Resampling.BILINEAR)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # PIL's kinds of bad file
                raise ConfigError(f"dataset.params: {file} is not an image that can be decoded ({exc})") from None
            images.append(np.asarray(pixels, np.float32).reshape(*params.size, -1) * scale + shift)
            labels.append(label)
    return np.stack(images), np.asarray(labels), names


def load_image_folder(params: ImageFolderParams):
    """Images from one sub-folder per class, resized and scaled as the params say."""
    x, y, names = read(params.path, None, params)
    if params.test_path is None:
        return x, y
    return x, y, *read(params.test_path, names, params)[:2]


def digest(params) -> str:
    return content_sha256(params.path, params.test_path, what="dataset.params")


@hookimpl
def register_datasets(register):
    register(Dataset("image_folder", load_image_folder, ImageFolderParams, digest))
