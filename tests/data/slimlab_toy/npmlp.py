"""npmlp: an MLP's dense layers in one .npz, run by NumPy on the host and on devices."""

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from slimlab.api import Format, RuntimeOptions, Stage, hookimpl, record_parity


def convert_npmlp(artifact, params, ctx) -> dict:
    """The Keras MLP's dense layers as NumPy arrays; parity with the Keras model is recorded."""
    model = {}
    for i, layer in enumerate(layer for layer in artifact.model.layers if layer.weights):
        model[f"w{i}"], model[f"b{i}"] = layer.get_weights()
    record_parity(ctx, artifact, NpMlp(), model)
    return model


class MlpOptions(RuntimeOptions):
    dtype: Literal["float32", "float64"] | None = Field(None, description="NumPy dtype to compute in")


class NpMlp(Format):
    name = "npmlp"
    filenames = ("model.npz",)  # the main file first
    Options = MlpOptions  # bench.options.npmlp, checked on the host and again by the payload
    runtime_adapter = Path(__file__).with_name("npmlp_device.py")  # its Adapter also predicts on the host
    converter = Stage("convert.npmlp", convert_npmlp, inputs=("keras",), output="npmlp")

    def save(self, model: dict, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(self.paths(folder)[0], **model)

    def load(self, folder: Path) -> dict:
        with np.load(self.paths(folder)[0]) as data:
            return dict(data)

    def weights(self, model: dict) -> list[np.ndarray]:
        return list(model.values())


@hookimpl
def register_formats(register):
    register(NpMlp())
