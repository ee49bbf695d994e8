"""Keras training shared by the stages that train or fine-tune."""

import numpy as np


def keras():
    import tf_keras

    return tf_keras


def build_model(name: str, params: dict, splits, seed: int):
    """A registered architecture for this data set, with its initial weights drawn from ``seed``."""
    from slimlab import registry

    keras().utils.set_random_seed(seed)
    return registry.models()[name](splits.input_shape, splits.num_classes, **params)


def compile_and_fit(model, splits, *, epochs: int, batch_size: int, learning_rate: float, seed: int, callbacks=()):
    """Train on the train split with seeded shuffling; return per-epoch history for the sidecar."""
    k = keras()
    k.utils.set_random_seed(seed)
    model.compile(
        optimizer=k.optimizers.Adam(learning_rate),
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        splits.x_train, splits.y_train,
        validation_data=(splits.x_val, splits.y_val),
        epochs=epochs, batch_size=batch_size, callbacks=list(callbacks), verbose=0,
    )
    return {name: [round(float(v), 5) for v in values] for name, values in history.history.items()}


def representative_samples(splits, count: int, seed: int):
    """A seeded sample of training images for calibration, one batch of 1 at a time."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(splits.x_train), size=min(count, len(splits.x_train)), replace=False)

    def generate():
        for i in picked:
            yield [splits.x_train[i : i + 1]]

    return generate
