"""BatchNormalization statistics that match the weights they normalise.

Keras keeps each BatchNormalization's inference-mode mean and variance as a moving average
(momentum 0.99 by default): after a short fine-tune (a prune, a cluster, a few epochs of
training) they still describe the old weights, and the model in inference mode can score
far below the same weights in training mode. :func:`refresh` re-estimates them over the
whole training split in one pass, as AdaBN and PyTorch's ``swa_utils.update_bn`` do: the
network runs in training mode batch by batch (each layer normalised by its batch, as in
training), and each layer's mean and variance become those of its inputs over the whole
split, summed exactly, not a moving average. Only the statistics change; no weight does.
"""

import numpy as np

from slimlab import data

# Batches large enough that batch statistics are close to the split's, small enough that every layer's input fits.
BATCH = 128


def _layers(model) -> list:
    """The model's BatchNormalization layers; none in a quantization-aware model, whose fake-quant ranges a
    training-mode pass would move too (tfmot folds its BatchNorms into the convolutions anyway)."""
    if any(type(layer).__name__.startswith("Quantize") for layer in model.layers):
        return []
    return [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]


def _input_in(model, layer):
    """``layer``'s input tensor in ``model``'s graph: a layer shared with another model (the prune stages clone
    the model around its own layers) has a node per model, and ``layer.input`` is the first one's."""
    (index,) = [i for i in range(len(layer.inbound_nodes)) if f"{layer.name}_ib-{i}" in model._network_nodes]
    return layer.get_input_at(index)


def _val_score(model, splits, targets) -> float:
    """Validation accuracy on class labels; else minus the mean squared error to the source model's outputs."""
    predicted = model.predict(splits.x_val, batch_size=BATCH, verbose=0)
    if splits.num_classes is not None:
        return round(float(np.mean(np.argmax(predicted, axis=-1) == splits.y_val)), 5)
    predicted = predicted if isinstance(predicted, list) else [predicted]
    return -float(np.mean([np.mean(np.square(p - t)) for p, t in zip(predicted, targets)]))


def refresh(model, splits, targets=None) -> dict | None:
    """Re-estimate every BatchNormalization's statistics over ``splits.x_train``, in place; None if the model has
    none. Returns what was done, with the inference-mode validation score before and after (accuracy, or without
    class labels minus the mean squared error to ``targets``, the source model's validation outputs). Statistics
    that score lower than the ones they replace are put back (``kept: previous``)."""
    layers = _layers(model)
    if not layers:
        return None
    before = _val_score(model, splits, targets)
    previous = [[np.array(v) for v in (layer.moving_mean, layer.moving_variance)] for layer in layers]
    import tf_keras  # the models' Keras (slimlab.kit.training.keras), imported on first use

    inputs = tf_keras.Model(model.inputs, [_input_in(model, layer) for layer in layers])
    rows, sums, squares = [0] * len(layers), [0.0] * len(layers), [0.0] * len(layers)
    for start in range(0, data.count(splits.x_train), BATCH):
        found = inputs(data.take(splits.x_train, slice(start, start + BATCH)), training=True)
        for index, x in enumerate(found if len(layers) > 1 else [found]):
            values = np.asarray(x, np.float64).reshape(-1, x.shape[-1])  # channels last: a row per position
            rows[index] += len(values)
            sums[index] += values.sum(axis=0)
            squares[index] += np.square(values).sum(axis=0)
    for layer, count, total, square in zip(layers, rows, sums, squares):
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(square / count - np.square(mean), 0).astype(np.float32))
    after = _val_score(model, splits, targets)
    kept = "refreshed"
    if after < before:
        for layer, (mean, variance) in zip(layers, previous):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        kept = "previous"
    metric = "val_accuracy" if splits.num_classes is not None else "val_neg_mse"
    return {"layers": len(layers), "samples": data.count(splits.x_train), f"{metric}_before": before,
            f"{metric}_after": after, "kept": kept}
