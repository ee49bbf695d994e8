"""image_folder: your own images, one sub-folder per class (``cats/``, ``dogs/``, ...), or unlabelled.

``{name: image_folder, params: {path: data/train, size: [64, 64], color: rgb, test_path: data/test}}``.
Classes are the sub-folders in sorted order (label 0 first). With ``labels: none`` the
images are the files in the folder itself, without labels (for the ``fidelity`` task,
which scores a model against its source's outputs). Every image is resized to
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
    labels: Literal["folders", "none"] = Field("folders", description="folders: a sub-folder per class; none: "
                                                "unlabelled images in the folder itself")


def classes(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise ConfigError(f"dataset.params: {folder} is not a folder (give a folder with one sub-folder per class)")
    found = sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise ConfigError(f"dataset.params: {folder} has no class sub-folders")
    return found


def image_files(folder: Path, what: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"dataset.params: {what} {folder} holds no images")
    return files


def decode(file: Path, params: ImageFolderParams) -> np.ndarray:
    """One image resized, converted and scaled as the params say; a ConfigError naming a file that will not decode."""
    mode, (scale, shift) = "RGB" if params.color == "rgb" else "L", RANGES[params.range]
    try:
        with Image.open(file) as image:
            pixels = image.convert(mode).resize(params.size[::-1], Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:  # PIL's kinds of bad file
        raise ConfigError(f"dataset.params: {file} is not an image that can be decoded ({exc})") from None
    return np.asarray(pixels, np.float32).reshape(*params.size, -1) * scale + shift


def read(path: str, names: list[str] | None, params: ImageFolderParams) -> tuple[np.ndarray, np.ndarray, list[str]]:
    folder = existing(path, "dataset.params")
    names = names or classes(folder)
    if classes(folder) != names:
        raise ConfigError(f"dataset.params: {folder} has classes {classes(folder)}, expected {names}")
    images, labels = [], []
    for label, name in enumerate(names):
        files = image_files(folder / name, "class folder")
        images += [decode(file, params) for file in files]
        labels += [label] * len(files)
    return np.stack(images), np.asarray(labels), names


def read_unlabelled(path: str, params: ImageFolderParams) -> tuple[np.ndarray, None]:
    folder = existing(path, "dataset.params")
    return np.stack([decode(file, params) for file in image_files(folder, "folder")]), None


def load_image_folder(params: ImageFolderParams):
    """Images from one sub-folder per class (or unlabelled ones), resized and scaled as the params say."""
    if params.labels == "none":
        train = read_unlabelled(params.path, params)
        return train if params.test_path is None else (*train, *read_unlabelled(params.test_path, params))
    x, y, names = read(params.path, None, params)
    if params.test_path is None:
        return x, y
    return x, y, *read(params.test_path, names, params)[:2]


def digest(params) -> str:
    return content_sha256(params.path, params.test_path, what="dataset.params")


@hookimpl
def register_datasets(register):
    register(Dataset("image_folder", load_image_folder, ImageFolderParams, digest))
