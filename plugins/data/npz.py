"""npz: your own arrays in a NumPy ``.npz`` file, with an optional separate test file.

``{name: npz, params: {path: data/train.npz, x_key: x, y_key: y, test_path: data/test.npz}}``.
Images are (N, H, W, C) or (N, H, W) numbers; labels are in the task's shape (class
indices from 0 for classification; boxes, landmarks or masks for other tasks), and
``y_key: null`` reads unlabelled images (the ``fidelity`` task needs no labels). A model of
several inputs reads a list, ``x_key: [image, extra]``: one array per input, named as the
model names its inputs. ``scale`` multiplies the images (e.g. ``1/255`` for uint8 pixels);
nothing else is changed.
Without ``test_path`` the test split comes out of ``path`` by ``test_fraction``.
"""

from typing import Annotated

import numpy as np
from pydantic import Field

from slimlab import hookimpl
from slimlab.data import Dataset, DatasetParams
from slimlab.errors import ConfigError
from slimlab.kit.files import content_sha256, existing


class NpzParams(DatasetParams):
    path: str = Field(min_length=1, description="the .npz file (relative to the working directory)")
    x_key: str | tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        "x", min_length=1, description="the array of images; a list for a model of several inputs, each array "
                                      "named as the model names that input")
    y_key: str | None = Field("y", min_length=1, description="the array of labels; null: unlabelled")
    test_path: str | None = Field(None, min_length=1, description="a second .npz holding the test split")
    scale: float = Field(1.0, gt=0, le=1e6, description="images are multiplied by this (1/255 for uint8)")


def read(path: str, params: NpzParams) -> tuple[np.ndarray, np.ndarray | None]:
    where = f"dataset.params: {path}"
    inputs = [params.x_key] if isinstance(params.x_key, str) else params.x_key
    keys = [*inputs, *([] if params.y_key is None else [params.y_key])]
    try:
        loaded = np.load(existing(path, "dataset.params"), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file holds one bare array
            raise ConfigError(f"{where}: a single array (.npy), not an .npz holding "
                              f"{' and '.join(map(repr, keys))}")
        with loaded as arrays:
            missing = [key for key in keys if key not in arrays.files]
            if missing:
                hint = "; for unlabelled images set y_key: null" if missing[0] == params.y_key else ""
                raise ConfigError(f"{where}: no array {missing[0]!r}; it holds {', '.join(arrays.files)}{hint}")
            found = {key: scaled(arrays[key], params.scale) for key in inputs}
            y = None if params.y_key is None else arrays[params.y_key]
    except (OSError, ValueError, EOFError) as exc:  # not a zip, truncated, or an object array
        raise ConfigError(f"{where}: cannot read it as .npz ({exc})") from None
    return (found[inputs[0]] if len(inputs) == 1 else found), y


def scaled(x: np.ndarray, scale: float) -> np.ndarray:
    # Non-numbers are left for the data checks to name; scaling them would fail with numpy's message.
    return x.astype(np.float32) * np.float32(scale) if np.issubdtype(x.dtype, np.number) else x


def load_npz(params: NpzParams):
    """Images and labels (or unlabelled images) from .npz files."""
    train = read(params.path, params)
    return train if params.test_path is None else (*train, *read(params.test_path, params))


def digest(params) -> str:
    return content_sha256(params.path, params.test_path, what="dataset.params")


@hookimpl
def register_datasets(register):
    register(Dataset("npz", load_npz, NpzParams, digest))
