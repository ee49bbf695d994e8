"""keras: a tf_keras model in one ``.keras`` file, the format every training and compression stage works on.

Host only (no runtime adapter): devices run its conversions. MACs are counted over the graph
(``slimlab.kit.depgraph.macs``): one per kernel weight per output position of every Conv, depthwise,
separable, transposed conv and Dense call; BatchNormalization, activations, pooling and element-wise
ops count 0, as the TFLite count does, so both formats of one model agree.
"""

import zipfile
from pathlib import Path

import numpy as np

from slimlab import hookimpl
from slimlab.atomic import atomic_path
from slimlab.errors import ArtifactError
from slimlab.formats import Format
from slimlab.kit import depgraph
from slimlab.kit.training import keras


class KerasFormat(Format):
    name = "keras"
    filenames = ("model.keras",)

    def save(self, model, folder: Path) -> None:
        with atomic_path(self.paths(folder)[0]) as tmp:
            model.save(tmp)

    def load(self, folder: Path):
        path = self.paths(folder)[0]
        if not zipfile.is_zipfile(path):
            raise ArtifactError(f"{path}: not a Keras .keras archive (truncated or corrupt)")
        try:
            return keras().models.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many kinds for a bad archive; the file is named either way
            raise ArtifactError(f"{path}: Keras could not load the model: {exc}") from exc

    def predict(self, model, x: np.ndarray) -> dict[str, np.ndarray]:
        found = model.predict(x, batch_size=256, verbose=0)
        if isinstance(found, dict):
            return {name: np.asarray(value) for name, value in found.items()}
        found = found if isinstance(found, list) else [found]
        return {name: np.asarray(value) for name, value in zip(model.output_names, found)}

    def input_specs(self, model) -> dict[str, dict]:
        return {name: {"shape": list(tensor.shape), "dtype": tensor.dtype.name}
                for name, tensor in zip(model.input_names, model.inputs)}

    def weights(self, model) -> list[np.ndarray]:
        return [np.asarray(w) for w in model.get_weights()]

    def macs(self, model) -> dict | None:
        return depgraph.macs(model)


@hookimpl
def register_formats(register):
    register(KerasFormat())
