"""image_folder: your own images, one sub-folder per class (``cats/``, ``dogs/``, ...), annotated, or unlabelled.

``{name: image_folder, params: {path: data/train, size: [64, 64], color: rgb, test_path: data/test}}``.
Classes are the sub-folders in sorted order (label 0 first). With ``labels: none`` the
images are the files in the folder itself, without labels (for the ``fidelity`` task,
which scores a model against its source's outputs). With ``labels: annotations`` they are
the files in the folder itself too, each labelled in the task's shape by a small file in
the folder, ``annotations.json`` or ``annotations.csv`` (the first found):

- JSON: ``{"face1.jpg": [[0, 0.1, 0.2, 0.5, 0.6]], "face2.jpg": 3, ...}``: a number or a nested list per file;
- CSV: a header, then rows of ``file,value,value,...``; a file's rows in order are its label (one row:
  the values; several: a row each, e.g. one box per row as detection's ``class,x1,y1,x2,y2``).

Labels with fewer rows than the most any file has (fewer boxes) are padded with rows of -1, as
``detection`` reads them. A file without a label, or a label without a file, is an error naming it.

Every image is resized to ``size`` (height, width), converted to ``color``, and scaled to ``range``: ``unit``
[0, 1], ``symmetric`` [-1, 1], or ``pixels`` [0, 255]. A file that will not decode is
an error that names it. ``test_path`` is a folder with the same classes.
"""

import csv
import json
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
    labels: Literal["folders", "none", "annotations"] = Field(
        "folders", description="folders: a sub-folder per class; none: unlabelled images in the folder itself; "
                               "annotations: images in the folder itself, labelled by its annotations.json or .csv")


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


ANNOTATIONS = ("annotations.json", "annotations.csv")


def annotations(folder: Path) -> tuple[Path, dict[str, list]]:
    """The folder's annotation file and its labels by image file name (each a number or a nested list)."""
    found = [folder / name for name in ANNOTATIONS if (folder / name).is_file()]
    if not found:
        raise ConfigError(f"dataset.params: {folder} has no {' or '.join(ANNOTATIONS)} (labels: annotations)")
    path = found[0]
    try:
        if path.suffix == ".json":
            labels = json.loads(path.read_text())
            if not isinstance(labels, dict):
                raise ValueError("expected an object of file name -> label")
            return path, labels
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))[1:]  # the header names the columns for people
        labels = {}
        for row in rows:
            labels.setdefault(row[0], []).append([float(value) for value in row[1:]])
        if all(len(found) == 1 for found in labels.values()):  # a row per file is the label itself
            return path, {name: found[0][0] if len(found[0]) == 1 else found[0] for name, found in labels.items()}
        return path, labels
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ConfigError(f"dataset.params: {path}: cannot read it ({exc})") from None


def stack_labels(path: Path, labels: list) -> np.ndarray:
    """Per-file labels as one array; labels with fewer rows are padded with rows of -1."""
    try:
        arrays = [np.asarray(label, np.float32) if label != [] else np.zeros((0, 0), np.float32) for label in labels]
    except (TypeError, ValueError):
        raise ConfigError(f"dataset.params: {path}: a label is not a number or a list of numbers") from None
    if len({array.shape[1:] for array in arrays if array.size}) > 1:
        raise ConfigError(f"dataset.params: {path}: the labels do not share one shape")
    if len({array.shape for array in arrays}) > 1 and all(array.ndim == 2 for array in arrays):
        width, rows = max(array.shape[1] for array in arrays), max(len(array) for array in arrays)
        arrays = [np.concatenate([array.reshape(-1, width), np.full((rows - len(array), width), -1, np.float32)])
                  for array in arrays]
    try:
        return np.stack(arrays)
    except ValueError:
        raise ConfigError(f"dataset.params: {path}: the labels do not share one shape") from None


def read_annotated(path: str, params: ImageFolderParams) -> tuple[np.ndarray, np.ndarray]:
    folder = existing(path, "dataset.params")
    file, labels = annotations(folder)
    files = [image for image in image_files(folder, "folder") if image.name not in ANNOTATIONS]
    unlabelled = [image.name for image in files if image.name not in labels]
    missing = sorted(set(labels) - {image.name for image in files})
    if unlabelled or missing:
        problem = f"{unlabelled[0]} has no label" if unlabelled else f"labels {missing[0]!r}, which is no image here"
        raise ConfigError(f"dataset.params: {file}: {problem}")
    return np.stack([decode(image, params) for image in files]), stack_labels(file, [labels[f.name] for f in files])


def read_unlabelled(path: str, params: ImageFolderParams) -> tuple[np.ndarray, None]:
    folder = existing(path, "dataset.params")
    return np.stack([decode(file, params) for file in image_files(folder, "folder")]), None


def load_image_folder(params: ImageFolderParams):
    """Images from one sub-folder per class (or annotated, or unlabelled), resized and scaled as the params say."""
    if params.labels != "folders":
        read_flat = read_unlabelled if params.labels == "none" else read_annotated
        train = read_flat(params.path, params)
        return train if params.test_path is None else (*train, *read_flat(params.test_path, params))
    x, y, names = read(params.path, None, params)
    if params.test_path is None:
        return x, y
    return x, y, *read(params.test_path, names, params)[:2]


def digest(params) -> str:
    return content_sha256(params.path, params.test_path, what="dataset.params")


@hookimpl
def register_datasets(register):
    register(Dataset("image_folder", load_image_folder, ImageFolderParams, digest))
