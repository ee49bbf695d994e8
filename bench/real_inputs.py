"""Input images for the real models of bench/fetch_models.py, made from a real photo that ships with matplotlib.

    python bench/real_inputs.py                   # data/real/<model>/inputs.npz (relative to the working directory)
    python bench/real_inputs.py --dest DIR --n 120 --seed 0

The photo is matplotlib's ``sample_data/grace_hopper.jpg`` (512x600, a US Navy portrait in the
public domain), installed with matplotlib: nothing is downloaded. Each sample is a square crop of
it (random size and shift around the face), maybe mirrored, with random brightness and contrast,
resized to the model's input and scaled to the value range its MediaPipe graph feeds it. The same
seed gives the same arrays.

Each ``inputs.npz`` holds ``x`` (N, H, W, 3) float32. The detector's also holds ``y`` (N, 1, 5), the
detection task's labels: one row [class 0 (face), x1, y1, x2, y2] per image, as fractions of the
input's width and height, from one hand annotation of the face box on the photo (below) moved with
each crop and mirror, so exact up to that annotation. The mesh model gets ``x`` only (the task is
fidelity): 468 mesh points cannot be annotated by hand exactly enough to score a model against.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# Annotated once by eye on the 512x600 photo, in its pixels (checked drawn over the photo).
FACE_BOX = (160, 145, 365, 325)  # forehead below the cap's brim to the chin, cheek to cheek

# model: (input side, value range, crop side as a multiple of the face box's larger side, centre shift
# as a fraction of the crop side, whether it gets labels). The ranges are the output_tensor_float_range of
# the ImageToTensorCalculator in each model's MediaPipe graph.
SPECS = {
    # BlazeFace short range: faces filling a good part of a selfie-like frame.
    "face_detection": (128, (-1.0, 1.0), (1.8, 3.2), 0.2, True),
    # The mesh model sees the face's region of interest: the detection box enlarged 1.5x.
    "face_landmark": (192, (0.0, 1.0), (1.35, 1.7), 0.06, False),
}


def photo() -> Image.Image:
    import matplotlib

    return Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")


def sample(image: Image.Image, spec: tuple, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One augmented input and the face's box [x1, y1, x2, y2] in it, as fractions of its side."""
    side, (low, high), (small, large), shift, _ = spec
    x0, y0, x1, y1 = FACE_BOX
    crop = max(x1 - x0, y1 - y0) * rng.uniform(small, large)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + rng.uniform(-shift, shift, 2) * crop
    # Whole pixels, so that the labels use exactly the crop PIL makes (it pads outside the photo with black).
    left, top = np.round(centre - crop / 2).astype(int)
    crop = int(round(crop))
    pixels = image.crop((left, top, left + crop, top + crop)).resize((side, side), Image.BILINEAR)
    x = np.asarray(pixels, np.float32) / 255
    box = (np.array(FACE_BOX, np.float32) - (left, top, left, top)) / crop
    if rng.random() < 0.5:  # mirrored: x runs the other way, so x1 and x2 swap too
        x = x[:, ::-1]
        box[[0, 2]] = 1 - box[[2, 0]]
    brightness, contrast = rng.uniform(0.7, 1.3), rng.uniform(0.8, 1.2)
    x = np.clip((x * brightness - 0.5) * contrast + 0.5, 0, 1)
    return (low + x * (high - low)).astype(np.float32), box


def make(name: str, n: int, seed: int, image: Image.Image) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, list(SPECS).index(name)])  # each model its own stream
    xs, boxes = zip(*(sample(image, SPECS[name], rng) for _ in range(n)))
    arrays = {"x": np.stack(xs)}
    if SPECS[name][-1]:  # class 0 (face) and the box: one row per image
        arrays["y"] = np.concatenate([np.zeros((n, 1), np.float32), np.stack(boxes)], axis=1)[:, None]
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("data/real"), help="folder for <model>/inputs.npz")
    parser.add_argument("--n", type=int, default=120, help="images per model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    image = photo()
    for name in SPECS:
        arrays = make(name, args.n, args.seed, image)
        target = args.dest / name / "inputs.npz"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(".inputs.tmp.npz")  # np.savez adds .npz to a name without it
        np.savez_compressed(tmp, **arrays)
        tmp.replace(target)
        x = arrays["x"]
        print(f"{target}: x {list(x.shape)} in [{x.min():.2f}, {x.max():.2f}]"
              + (f"; y {list(arrays['y'].shape)} [class, x1, y1, x2, y2]" if "y" in arrays else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
