"""A third-party slimlab plugin package, as a stranger would write one: one of every kind.

Installed by tests/unit/test_third_party.py as a distribution with a ``slimlab``
entry point; nothing in slimlab lists any of these names.
"""

import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Literal

import numpy as np
import pydantic

from slimlab import hookimpl
from slimlab.data import Dataset, DatasetParams
from slimlab.formats import Format, RuntimeOptions
from slimlab.kit import parity
from slimlab.kit.training import Architecture, keras
from slimlab.lab.devices import Settings
from slimlab.lab.energy import POWER, SysfsProbe, SysfsSettings
from slimlab.lab.transport import CommandResult, Transport
from slimlab.plugins.lab.python_runner import PythonRunner
from slimlab.stages import Stage


# --- a data set with params: Gaussian blobs drawn as tiny images -------------------------

class BlobParams(DatasetParams):
    samples: int = pydantic.Field(300, ge=30)
    classes: int = pydantic.Field(3, ge=2, le=10)


def load_blobs(params: BlobParams):
    """Gaussian blobs, one per class, as 6x6 one-channel images."""
    rng = np.random.default_rng(0)
    y = np.arange(params.samples) % params.classes
    centres = rng.normal(size=(params.classes, 6, 6, 1))
    return (centres[y] + 0.3 * rng.normal(size=(params.samples, 6, 6, 1))).astype(np.float32), y


# --- an architecture -------------------------------------------------------------------

def build_mlp(input_shape, num_classes, hidden: int = 16):
    layers = keras().layers
    return keras().Sequential([layers.Input(input_shape), layers.Flatten(),
                               layers.Dense(hidden, activation="relu"), layers.Dense(num_classes)])


# --- a format: an MLP's dense layers in one .npz, run by NumPy -------------------------

def convert_npmlp(artifact, params, ctx) -> dict:
    """The Keras MLP's dense layers as NumPy arrays; parity is recorded."""
    dense = [layer for layer in artifact.model.layers if layer.weights]
    model = {}
    for i, layer in enumerate(dense):
        model[f"w{i}"], model[f"b{i}"] = layer.get_weights()
    parity.record(ctx, artifact, NpMlp(), model)
    return model


class MlpOptions(RuntimeOptions):
    dtype: Literal["float32", "float64"] | None = pydantic.Field(None, description="NumPy dtype to compute in")


class NpMlp(Format):
    name = "npmlp"
    filenames = ("model.npz",)
    Options = MlpOptions
    runtime_adapter = files(__name__) / "npmlp_device.py"
    converter = Stage("convert.npmlp", convert_npmlp, inputs=("keras",), output="npmlp")

    def save(self, model: dict, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(self.paths(folder)[0], **model)

    def load(self, folder: Path) -> dict:
        with np.load(self.paths(folder)[0]) as data:
            return dict(data)

    def predict(self, model: dict, x: np.ndarray) -> np.ndarray:
        h = x.reshape(len(x), -1)
        layers = len(model) // 2
        for i in range(layers):
            h = h @ model[f"w{i}"] + model[f"b{i}"]
            h = np.maximum(h, 0) if i < layers - 1 else h
        return h

    def weights(self, model: dict) -> list[np.ndarray]:
        return list(model.values())


def keep(artifact, params, ctx):
    """Return the Keras model as it is (a stage from a third party)."""
    return artifact.model


# --- a transport: commands run on this host in a folder of their own -------------------

class BoxSettings(Settings):
    root: str = pydantic.Field(min_length=1)


class BoxTransport(Transport):
    name = "box"
    Settings = BoxSettings
    default_workdir = "box"

    @property
    def workdir(self):
        return Path(self.settings.root).resolve()

    @property
    def physical_id(self) -> str:
        return f"box:{self.workdir}"

    def has_file(self, remote, sha256):
        return Path(remote).is_file()

    def upload(self, local, remote, sha256):
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        Path(remote).write_bytes(Path(local).read_bytes())

    def run(self, argv, timeout):
        self.workdir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(argv, cwd=self.workdir, capture_output=True, text=True, timeout=timeout)
        return CommandResult(done.returncode, done.stdout, done.stderr)


# --- a runner: the python runner without a warm-up ------------------------------------

class QuickRunner(PythonRunner):
    name = "quick"

    def measure(self, artifact, threads, settings):
        return super().measure(artifact, threads, {**settings, "warmup": 0})


# --- an energy probe: a sysfs-style power file in µW -----------------------------------

class MeterSettings(SysfsSettings):
    file: str = pydantic.Field(min_length=1, description="a file holding the power draw in µW")


class PowerFile(SysfsProbe):
    name = "powerfile"
    kind = POWER
    Settings = MeterSettings

    def read(self) -> dict[str, float]:
        (power,) = self.read_numbers([self.path(self.settings.file)])
        return {"board": power}


@hookimpl
def register_datasets(register):
    register(Dataset("blobs", load_blobs, BlobParams))


@hookimpl
def register_models(register):
    register(Architecture("tiny_mlp", build_mlp))


@hookimpl
def register_formats(register):
    register(NpMlp())


@hookimpl
def register_stages(register):
    register(Stage("toy.keep", keep))


@hookimpl
def register_transports(register):
    register(BoxTransport)


@hookimpl
def register_runners(register):
    register(QuickRunner)


@hookimpl
def register_energy_probes(register):
    register(PowerFile)
