"""Tiny multi-output and multi-task models, made here (no downloads), with npz data to match.

Each builder returns an untrained tf_keras functional model (or, with ``lib=keras``, a Keras 3 one)
with seeded random weights, named after its builder, its outputs named as documented. Every model uses
only ops that LiteRT, tf2onnx, pnnx (ncnn) and MNN all take. :func:`save` writes one in a
given kind (Keras 3, tf_keras, SavedModel, TFLite, ONNX) for slimlab's ``import`` stage; the
data makers write ``.npz`` files for the ``npz`` data plugin (keys ``x`` and, if labelled,
``y``) whose labels follow from the pixels by a fixed rule, so a trained model can learn them.
"""

from pathlib import Path

import numpy as np

from slimlab.kit.training import keras

KINDS = ("keras3", "tf_keras", "savedmodel", "tflite", "onnx")
SIZE = 16  # every image model takes (SIZE, SIZE, 3) NHWC float
ANCHORS = (2, 6)  # per cell, on the stride-4 (4x4) and stride-8 (2x2) feature maps
NUM_ANCHORS = 4 * 4 * ANCHORS[0] + 2 * 2 * ANCHORS[1]  # 56


def _start(lib):
    """Keras (``lib``, default tf_keras) and its layers: those used here take the same arguments in both."""
    tfk = lib or keras()
    return tfk, tfk.layers


def _randomise(model, seed: int):
    """Give every weight a seeded random value, in both Keras versions alike, and return the model.

    Kernels are He-normal (outputs keep their spread, not ~1e-3 as with Keras' defaults on these inputs); biases
    and BatchNorm statistics are non-trivial too, so a converter that drops or misreads one is seen."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape, name = tuple(weight.shape), weight.name.split("/")[-1].split(":")[0]
            if len(shape) > 1:  # a kernel; a depthwise one's fan-in is its window alone
                fan_in = np.prod(shape[:2] if type(layer).__name__ == "DepthwiseConv2D" else shape[:-1])
                values.append(rng.normal(0, np.sqrt(2 / fan_in), shape))
            elif name in ("gamma", "moving_variance"):
                values.append(rng.uniform(0.5, 1.5, shape))
            else:  # bias, beta, moving_mean
                values.append(rng.normal(0, 0.1, shape))
        layer.set_weights([v.astype(np.float32) for v in values])
    return model


def _backbone(L, x):
    """Conv → depthwise → pointwise at stride 2 (8x8), then stride 4 (4x4): the shared stem."""
    h = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    h = L.ReLU()(L.BatchNormalization(name="dw_bn")(L.DepthwiseConv2D(3, padding="same", name="dw")(h)))
    h = L.Conv2D(16, 1, activation="relu", name="pw")(h)
    return L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="down4")(h)


def two_head(seed: int = 0, lib=None):
    """Image (16, 16, 3) → ``class_logits`` (None, 4) and ``box`` (None, 4) in [0, 1] (sigmoid); ~3k params."""
    tfk, L = _start(lib)
    image = tfk.Input((SIZE, SIZE, 3), name="image")
    pooled = L.GlobalAveragePooling2D()(_backbone(L, image))
    box = L.Dense(4, activation="sigmoid", name="box")(L.Dense(16, activation="relu", name="box_fc")(pooled))
    return _randomise(tfk.Model(image, [L.Dense(4, name="class_logits")(pooled), box], name="two_head"), seed)


def ssd_detector(seed: int = 0, lib=None):
    """SSD/BlazeFace-style: image (16, 16, 3) → ``boxes`` (None, 56, 4) and ``scores`` (None, 56, 1) logits.

    Anchors: 2 per cell of the 4x4 map (stride 4), then 6 per cell of the 2x2 map (stride 8); in each
    map row-major, cell by cell. The box values are raw regressions (offsets from the anchors)."""
    tfk, L = _start(lib)
    image = tfk.Input((SIZE, SIZE, 3), name="image")
    f4 = _backbone(L, image)
    f8 = L.Conv2D(24, 3, strides=2, padding="same", activation="relu", name="down8")(f4)
    boxes, scores = [], []
    for feature, anchors, stride in ((f4, ANCHORS[0], 4), (f8, ANCHORS[1], 8)):
        cells = (SIZE // stride) ** 2
        box = L.Conv2D(anchors * 4, 3, padding="same", name=f"box{stride}")(feature)
        score = L.Conv2D(anchors, 3, padding="same", name=f"score{stride}")(feature)
        boxes.append(L.Reshape((cells * anchors, 4), name=f"boxes{stride}")(box))
        scores.append(L.Reshape((cells * anchors, 1), name=f"scores{stride}")(score))
    outputs = [L.Concatenate(axis=1, name="boxes")(boxes), L.Concatenate(axis=1, name="scores")(scores)]
    return _randomise(tfk.Model(image, outputs, name="ssd_detector"), seed)


def segmenter(seed: int = 0, lib=None):
    """Image (16, 16, 3) → ``mask`` (None, 16, 16, 3): per-pixel logits of background / square / disk.

    A small U-Net: encode to 8x8, upsample (bilinear) back and join the full-size features."""
    tfk, L = _start(lib)
    image = tfk.Input((SIZE, SIZE, 3), name="image")
    full = L.Conv2D(8, 3, padding="same", activation="relu", name="enc1")(image)
    half = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="enc2")(full)
    half = L.Conv2D(16, 3, padding="same", activation="relu", name="mid")(half)
    # bilinear: MNN 3.6.1 reads TFLite's nearest resize and TRANSPOSE_CONV wrongly (outputs off by ~0.5)
    up = L.UpSampling2D(2, interpolation="bilinear", name="up")(half)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="dec")(L.Concatenate(name="skip")([up, full]))
    return _randomise(tfk.Model(image, L.Conv2D(3, 1, name="mask")(h), name="segmenter"), seed)


def two_input(seed: int = 0, lib=None):
    """Inputs ``image`` (16, 16, 3) and ``extra`` (8,) → ``logits`` (None, 3)."""
    tfk, L = _start(lib)
    image, extra = tfk.Input((SIZE, SIZE, 3), name="image"), tfk.Input((8,), name="extra")
    seen = L.GlobalAveragePooling2D()(_backbone(L, image))
    told = L.Dense(8, activation="relu", name="extra_fc")(extra)
    joined = L.Concatenate(name="join")([seen, told])
    return _randomise(tfk.Model([image, extra], L.Dense(3, name="logits")(joined), name="two_input"), seed)


BUILDERS = {"two_head": two_head, "ssd_detector": ssd_detector, "segmenter": segmenter, "two_input": two_input}


def keras3_copy(model):
    """The same model (architecture and weights) built by Keras 3 with its builder; Keras 3 cannot read every
    tf_keras layer config (DepthwiseConv2D's), so it is not rebuilt from ``model.get_config()``."""
    import keras as keras3

    copy = BUILDERS[model.name](lib=keras3)
    copy.set_weights(model.get_weights())
    return copy


def _export(model, kind: str) -> bytes:
    """TFLite or ONNX bytes by slimlab's helpers."""
    from slimlab.kit import export

    return (export.keras_to_tflite if kind == "tflite" else export.keras_to_onnx)(model)


def save(model, folder, kind: str) -> Path:
    """Write ``model`` into ``folder`` as ``kind`` (one of :data:`KINDS`); the path to import, named after the
    model: ``two_head-k3.keras``, ``two_head-tfk.keras``, ``two_head-saved/``, ``two_head.tflite``, ``.onnx``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"keras3": f"{model.name}-k3.keras", "tf_keras": f"{model.name}-tfk.keras",
             "savedmodel": f"{model.name}-saved", "tflite": f"{model.name}.tflite", "onnx": f"{model.name}.onnx"}
    if kind not in paths:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    path = folder / paths[kind]
    if kind == "keras3":
        keras3_copy(model).save(path)
    elif kind == "tf_keras":
        model.save(path)
    elif kind == "savedmodel":
        model.save(path, save_format="tf")
    else:
        path.write_bytes(_export(model, kind))
    return path


# ------------------------------------------------------------------------------ data


def _canvas(rng, n: int, shape) -> np.ndarray:
    """Dim noise in [0, 0.2): the shapes painted on it stand out by at least 0.6."""
    return rng.uniform(0.0, 0.2, (n, *shape)).astype(np.float32)


def _paint(rng, image: np.ndarray, where: np.ndarray) -> None:
    """Paint ``where`` (an H x W bool mask) bright in one random colour channel."""
    image[where, int(rng.integers(3))] = rng.uniform(0.8, 1.0)


def _square(rng, size: int, taken: np.ndarray | None = None, tries: int = 20) -> tuple[np.ndarray, tuple] | None:
    """A random square (side 3..6) clear of ``taken``: its mask and (x1, y1, x2, y2) in pixels; None if none fits."""
    for _ in range(tries):
        side = int(rng.integers(3, 7))
        x1, y1 = (int(v) for v in rng.integers(0, size - side + 1, 2))
        where = np.zeros((size, size), bool)
        where[y1:y1 + side, x1:x1 + side] = True
        if taken is None or not (where & taken).any():
            return where, (x1, y1, x1 + side, y1 + side)
    return None


def two_head_data(path, n: int = 240, seed: int = 0, size: int = SIZE) -> Path:
    """``x`` (n, size, size, 3): one bright square each, at a random place, in a random channel; no labels
    (the npz plugin has no multi-head labels yet; ``fidelity`` needs none)."""
    rng = np.random.default_rng(seed)
    x = _canvas(rng, n, (size, size, 3))
    for image in x:
        _paint(rng, image, _square(rng, size)[0])
    np.savez(path, x=x)
    return Path(path)


def detection_data(path, n: int = 240, seed: int = 0, size: int = SIZE) -> Path:
    """``x`` (n, size, size, 3) with 1 or 2 non-overlapping bright squares; ``y`` (n, 2, 5) float32 rows
    [class, x1, y1, x2, y2]: class 0 (square), corners divided by ``size`` (x across); unused rows class -1, 0s."""
    rng = np.random.default_rng(seed)
    x = _canvas(rng, n, (size, size, 3))
    y = np.zeros((n, 2, 5), np.float32)
    y[:, :, 0] = -1
    for image, rows in zip(x, y):
        taken = np.zeros((size, size), bool)
        for row in range(int(rng.integers(1, 3))):
            found = _square(rng, size, taken)
            if found is None:  # no room for the second: the image keeps one
                break
            where, corners = found
            _paint(rng, image, where)
            taken |= where
            rows[row] = [0, *(np.asarray(corners, np.float32) / size)]
    np.savez(path, x=x, y=y)
    return Path(path)


def segmentation_data(path, n: int = 240, seed: int = 0, size: int = SIZE) -> Path:
    """``x`` (n, size, size, 3) with a bright square and, in about half, a bright disk (radius 2..3) painted
    over it; ``y`` (n, size, size) int64: 0 background, 1 square, 2 disk (the class of each pixel's paint)."""
    rng = np.random.default_rng(seed)
    x = _canvas(rng, n, (size, size, 3))
    y = np.zeros((n, size, size), np.int64)
    rows, cols = np.mgrid[:size, :size]
    for image, mask in zip(x, y):
        where = _square(rng, size)[0]
        _paint(rng, image, where)
        mask[where] = 1
        if rng.random() < 0.5:
            radius = int(rng.integers(2, 4))
            cy, cx = rng.integers(radius, size - radius, 2)
            disk = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius ** 2
            image[disk] = _canvas(rng, 1, (3,))[0]  # repainted: no trace of the square beneath
            _paint(rng, image, disk)
            mask[disk] = 2
    np.savez(path, x=x, y=y)
    return Path(path)


def unlabelled_data(path, n: int = 64, seed: int = 0, shape=(SIZE, SIZE, 3)) -> Path:
    """``x`` (n, *shape) float32 uniform in [0, 1), no labels: for ``fidelity`` and calibration."""
    np.savez(path, x=np.random.default_rng(seed).uniform(0.0, 1.0, (n, *shape)).astype(np.float32))
    return Path(path)


def two_input_data(path, n: int = 240, seed: int = 0, size: int = SIZE) -> Path:
    """``image`` (n, size, size, 3) with one bright square in the channel of its class, ``extra`` (n, 8) noise, and
    ``y``: the class (0-2), for :func:`two_input`."""
    rng = np.random.default_rng(seed)
    image, y = _canvas(rng, n, (size, size, 3)), np.arange(n) % 3
    for picture, label in zip(image, y):
        picture[_square(rng, size)[0], label] = rng.uniform(0.8, 1.0)
    np.savez(path, image=image, extra=rng.normal(size=(n, 8)).astype(np.float32), y=y)
    return Path(path)
