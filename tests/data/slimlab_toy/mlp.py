"""tiny_mlp: an architecture for `train`."""

from pydantic import PositiveInt

from slimlab.api import Architecture, hookimpl, keras


def build_mlp(input_shape, num_classes, hidden: PositiveInt = 16):
    layers = keras().layers  # tf_keras
    return keras().Sequential([layers.Input(input_shape), layers.Flatten(),
                               layers.Dense(hidden, activation="relu"), layers.Dense(num_classes)])


@hookimpl
def register_models(register):
    register(Architecture("tiny_mlp", build_mlp))
