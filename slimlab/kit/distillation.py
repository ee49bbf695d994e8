"""Knowledge distillation: the loss, the teacher→student layer mapping and the training loop.

The student minimises

    w_soft · soft(t, s) + w_hard · CE(y, s) + w_cos · (1 − cos(h_s, h_t)) + w_hidden · MSE(h_s, h_t)

where ``soft`` is KL(softmax(t/T) ‖ softmax(s/T)) · T² (Hinton et al. 2015; T² keeps its
gradients on the scale of the hard loss) or the MSE between the raw logits, and h_s, h_t
are the hidden states of mapped student and teacher layers. The student's hidden state
goes through a learned linear projection to the teacher's width first (TinyBERT), so a
narrow student can still match a wide teacher. Models output logits, as slimlab trains them.
"""

from dataclasses import dataclass

import numpy as np

from slimlab.errors import ConfigError
from slimlab.kit.training import keras

MAPPINGS = ("uniform", "top", "bottom")


@dataclass(frozen=True)
class LossWeights:
    soft: float
    hard: float
    cos: float = 0.0
    hidden: float = 0.0
    temperature: float = 1.0
    soft_loss: str = "kl"  # or "mse" on the logits, where T plays no part

    @property
    def matches_features(self) -> bool:
        return self.cos > 0 or self.hidden > 0


def hidden_layers(model) -> list[str]:
    """Every layer with weights except the last one (the logits): the default layers to match."""
    return [layer.name for layer in model.layers if layer.weights][:-1]


def map_layers(teacher_layers: list[str], student_layers: list[str], how: str) -> dict[str, str]:
    """Pick one teacher layer for each student layer, as TinyBERT's mapping functions do.

    With N teacher and M student layers (M ≤ N): ``uniform`` maps student layer i
    (1-based) to teacher layer ⌊i·N/M⌋, i.e. every k-th layer for k = N/M, ending at
    the last; ``top`` maps the student's layers to the teacher's last M; ``bottom``
    to its first M.
    """
    n, m = len(teacher_layers), len(student_layers)
    if not 0 < m <= n:
        raise ConfigError(f"distill: cannot map {m} student layers onto {n} teacher layers; give 1 to {n} student layers")
    if how == "uniform":
        picked = [teacher_layers[(i + 1) * n // m - 1] for i in range(m)]
    elif how == "top":
        picked = teacher_layers[n - m:]
    elif how == "bottom":
        picked = teacher_layers[:m]
    else:
        raise ConfigError(f"distill: mapping must be one of {', '.join(MAPPINGS)}, not {how!r}")
    return dict(zip(student_layers, picked))


def check_layer_names(model, names: list[str], param: str) -> None:
    known = [layer.name for layer in model.layers]
    missing = [name for name in names if name not in known]
    if missing:
        raise ConfigError(f"distill: {param}: no layer named {', '.join(missing)}; the model has {', '.join(known)}")


def projection(student_shape, teacher_shape, where: str):
    """A learned linear map from the student's width to the teacher's (TinyBERT's W_h).

    A 1×1 convolution for feature maps, a dense layer for vectors; the identity when
    the widths already agree. Spatial sizes must agree: a projection cannot fix them.
    """
    layers = keras().layers
    if tuple(student_shape[1:-1]) != tuple(teacher_shape[1:-1]):
        raise ConfigError(
            f"distill: {where}: hidden states differ in size beyond their width "
            f"(student {tuple(student_shape[1:])}, teacher {tuple(teacher_shape[1:])}); map layers of equal spatial size"
        )
    if student_shape[-1] == teacher_shape[-1]:
        return layers.Identity()
    if len(student_shape) == 4:
        return layers.Conv2D(teacher_shape[-1], 1, name=f"{where}_projection")
    return layers.Dense(teacher_shape[-1], name=f"{where}_projection")


def loss_terms(y, s_logits, t_logits, s_hidden, t_hidden, weights: LossWeights) -> dict:
    """Each term of the distillation loss, before weighting."""
    import tensorflow as tf

    if weights.soft_loss == "mse":
        soft = tf.reduce_mean(tf.square(s_logits - t_logits))
    else:
        T = weights.temperature
        log_p_t, log_p_s = tf.nn.log_softmax(t_logits / T), tf.nn.log_softmax(s_logits / T)
        soft = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)) * T**2
    hard = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=s_logits))
    terms = {"soft": soft, "hard": hard}
    if weights.matches_features:
        # Each sample's hidden state as one vector, so a feature map is compared as a whole.
        pairs = [(tf.reshape(s, [tf.shape(s)[0], -1]), tf.reshape(t, [tf.shape(t)[0], -1]))
                 for s, t in zip(s_hidden, t_hidden)]
        cosine = [tf.reduce_sum(tf.nn.l2_normalize(s, -1) * tf.nn.l2_normalize(t, -1), -1) for s, t in pairs]
        terms["cos"] = tf.add_n([tf.reduce_mean(1 - c) for c in cosine]) / len(pairs)
        terms["hidden"] = tf.add_n([tf.reduce_mean(tf.square(s - t)) for s, t in pairs]) / len(pairs)
    return terms


def train_student(student, splits, teacher_logits: np.ndarray, weights: LossWeights, *, teacher=None,
                  mapping: dict[str, str] | None = None, epochs: int, batch_size: int, learning_rate: float,
                  seed: int) -> dict:
    """Train ``student`` in place against the teacher's logits on the train split (one row per image).

    With ``mapping`` (student layer → teacher layer) the Keras ``teacher`` also supplies
    hidden states. The projections live only here, so the student stays a plain model.
    Returns the per-epoch mean of each loss term and the student's validation accuracy.
    """
    import tensorflow as tf

    Model = keras().Model
    mapping = mapping or {}
    student_outputs = Model(student.inputs, [*(student.get_layer(s).output for s in mapping), *student.outputs])
    teacher_hidden = Model(teacher.inputs, [teacher.get_layer(t).output for t in mapping.values()]) if mapping else None
    projections = [
        projection(student.get_layer(s).output.shape, teacher.get_layer(t).output.shape, s) for s, t in mapping.items()
    ]
    for layer, s in zip(projections, mapping):
        layer.build(student.get_layer(s).output.shape)
    variables = student.trainable_variables + [v for layer in projections for v in layer.trainable_variables]
    optimizer = keras().optimizers.Adam(learning_rate)
    batches = (
        tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train, teacher_logits.astype(np.float32)))
        .shuffle(len(splits.y_train), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )

    @tf.function
    def step(x, y, t_logits):
        with tf.GradientTape() as tape:
            *s_hidden, s_logits = tf.nest.flatten(student_outputs(x, training=True))
            t_hidden = tf.nest.flatten(teacher_hidden(x, training=False)) if mapping else []
            s_hidden = [project(h) for project, h in zip(projections, s_hidden)]
            terms = loss_terms(y, s_logits, t_logits, s_hidden, t_hidden, weights)
            terms["loss"] = tf.add_n([getattr(weights, name) * value for name, value in terms.items()])
        optimizer.apply_gradients(zip(tape.gradient(terms["loss"], variables), variables))
        return terms

    history: dict[str, list[float]] = {}
    for _ in range(epochs):
        per_batch = [step(x, y, t_logits) for x, y, t_logits in batches]
        epoch = {name: np.mean([float(terms[name]) for terms in per_batch]) for name in per_batch[0]}
        predicted = np.argmax(student.predict(splits.x_val, batch_size=256, verbose=0), axis=-1)
        epoch["val_accuracy"] = np.mean(predicted == splits.y_val)
        for name, value in epoch.items():
            history.setdefault(name, []).append(round(float(value), 5))
    return history
