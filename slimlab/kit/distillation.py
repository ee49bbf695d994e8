"""Knowledge distillation: the loss, which student layer matches which teacher layer, and the training loop.

The student minimises

    w_soft · soft(t, s) + w_hard · CE(y, s)
      + w_cos · (1 − cos(h_s W, h_t)) + w_hidden · MSE(h_s W, h_t)
      + w_embedding · MSE(e_s W_e, e_t) + w_attention · MSE(A_s, A_t)

where ``soft`` is KL(softmax(t/T) ‖ softmax(s/T)) · T² (Hinton et al. 2015; T² keeps its
gradients on the scale of the hard loss) or the MSE between the raw logits; h are the
hidden states of mapped student and teacher layers, e the embeddings and A each mapped
block's per-head attention matrices (TinyBERT; transformers only, see
``slimlab.kit.transformer``). W and W_e are learned linear projections from the
student's width to the teacher's (the identity where they agree), so a narrow student
can still match a wide teacher; attention matrices are compared as they are, so the
student needs the teacher's heads and tokens. Each term is an average over its pairs.
Models output logits, as slimlab trains them.
"""

from dataclasses import dataclass, field

import numpy as np

from slimlab.errors import ConfigError
from slimlab.kit import batchnorm, transformer
from slimlab.kit.training import class_labels, keras

MAPPINGS = ("uniform", "top", "bottom")


@dataclass(frozen=True)
class LossWeights:
    soft: float
    hard: float
    cos: float = 0.0
    hidden: float = 0.0
    embedding: float = 0.0
    attention: float = 0.0
    temperature: float = 1.0
    soft_loss: str = "kl"  # or "mse" on the logits, where T plays no part

    @property
    def matches_features(self) -> bool:
        return any((self.cos, self.hidden, self.embedding, self.attention))


@dataclass(frozen=True)
class Matches:
    """Student layer -> teacher layer, for each kind of state the loss compares."""

    hidden: dict[str, str] = field(default_factory=dict)  # cos and MSE, through a projection
    embedding: dict[str, str] = field(default_factory=dict)  # MSE, through a projection
    attention: dict[str, str] = field(default_factory=dict)  # MSE, as they are

    def pairs(self) -> list[tuple[str, str, str]]:
        """``(kind, student layer, teacher layer)`` for every match, in a fixed order."""
        return [(kind, s, t) for kind in ("hidden", "embedding", "attention") for s, t in getattr(self, kind).items()]


def hidden_layers(model) -> list[str]:
    """The default layers to match: a transformer's block outputs, else every weighted layer but the logits."""
    if blocks := transformer.depth(model):
        return [transformer.layer_name(i, "out") for i in range(blocks)]
    return [layer.name for layer in model.layers if layer.weights][:-1]


def map_layers(teacher_layers: list, student_layers: list, how: str) -> dict:
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


def block_map(teacher, student, how: str) -> dict[int, int]:
    """Student block -> teacher block, by ``how``; both must be transformers."""
    transformer.require(teacher, "teacher", "distill")
    transformer.require(student, "student", "distill")
    return map_layers(list(range(transformer.depth(teacher))), list(range(transformer.depth(student))), how)


def attention_matches(teacher, student, blocks: dict[int, int], kind: str) -> dict[str, str]:
    """Each mapped block's heads, one to one: student head j matches teacher head j."""
    found = {}
    for s_block, t_block in blocks.items():
        s_heads, t_heads = (transformer.attention_layers(student, s_block, kind),
                            transformer.attention_layers(teacher, t_block, kind))
        if len(s_heads) != len(t_heads):
            raise ConfigError(f"distill: w_attention: student block {s_block} has {len(s_heads)} heads, teacher block "
                              f"{t_block} has {len(t_heads)}; attention matrices are matched head by head")
        found.update(zip(s_heads, t_heads))
    return found


def projection(student_shape, teacher_shape, where: str):
    """A learned linear map from the student's width to the teacher's (TinyBERT's W_h).

    A 1×1 convolution for feature maps, a dense layer for vectors and token sequences;
    the identity when the widths already agree. Other sizes must agree: a projection
    cannot fix them.
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


def loss_terms(y, s_logits, t_logits, weights: LossWeights, states: dict[str, list] | None = None) -> dict:
    """Each term of the distillation loss, before weighting; ``states[kind]`` holds (student, teacher) tensor pairs.

    ``soft`` and ``hard`` are always computed (the history shows both); a feature term only where its weight is set.
    """
    import tensorflow as tf

    states = states or {}
    if weights.soft_loss == "mse":
        soft = tf.reduce_mean(tf.square(s_logits - t_logits))
    else:
        T = weights.temperature
        log_p_t, log_p_s = tf.nn.log_softmax(t_logits / T), tf.nn.log_softmax(s_logits / T)
        soft = tf.reduce_mean(tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)) * T**2
    hard = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=s_logits))
    terms = {"soft": soft, "hard": hard}

    def mean_over(pairs, distance):
        return tf.add_n([distance(s, t) for s, t in pairs]) / len(pairs)

    def mse(s, t):
        return tf.reduce_mean(tf.square(s - t))

    def cosine_distance(s, t):
        # Each sample's state as one vector, so a feature map is compared as a whole.
        s, t = tf.reshape(s, [tf.shape(s)[0], -1]), tf.reshape(t, [tf.shape(t)[0], -1])
        return tf.reduce_mean(1 - tf.reduce_sum(tf.nn.l2_normalize(s, -1) * tf.nn.l2_normalize(t, -1), -1))

    for name, kind, distance in (("cos", "hidden", cosine_distance), ("hidden", "hidden", mse),
                                 ("embedding", "embedding", mse), ("attention", "attention", mse)):
        if getattr(weights, name):
            terms[name] = mean_over(states[kind], distance)
    return terms


def teacher_targets(teacher, logits: np.ndarray, matches: Matches, x: np.ndarray) -> list[np.ndarray]:
    """What the student trains against, computed once: the Keras ``teacher``'s matched layers, then ``logits``.

    Without matches the teacher may be any format: only its ``logits`` are used.
    """
    teacher_layers = [t for _, _, t in matches.pairs()]
    states = []
    if teacher_layers:
        tapped = keras().Model(teacher.inputs, [teacher.get_layer(t).output for t in teacher_layers])
        outputs = tapped.predict(x, batch_size=256, verbose=0)
        states = [np.asarray(a, np.float32) for a in (outputs if len(teacher_layers) > 1 else [outputs])]
    return [*states, np.asarray(logits, np.float32)]


def train_student(student, splits, targets: list[np.ndarray], weights: LossWeights, *, matches: Matches = Matches(),
                  epochs: int, batch_size: int, learning_rate: float, seed: int) -> dict:
    """Train ``student`` in place on the train split against ``targets`` (from :func:`teacher_targets`).

    The projections live only here, so the student stays a plain model. Returns the
    per-epoch mean of each loss term and the student's validation accuracy, and ``batchnorm`` where the
    student's BatchNormalization statistics were refreshed (:func:`slimlab.kit.batchnorm.refresh`).
    """
    import tensorflow as tf

    class_labels(splits, "distill")
    pairs = matches.pairs()
    student_outputs = keras().Model(student.inputs, [*(student.get_layer(s).output for _, s, _ in pairs), *student.outputs])
    projections = []
    for (kind, s, _), target in zip(pairs, targets):
        shape = student.get_layer(s).output.shape
        if kind == "attention":
            if tuple(shape[1:]) != target.shape[1:]:
                raise ConfigError(f"distill: w_attention: student {s} is {tuple(shape[1:])}, the teacher's is "
                                  f"{target.shape[1:]}; attention matrices need the same tokens")
            projections.append(keras().layers.Identity())
        else:
            projections.append(projection(shape, (None, *target.shape[1:]), s))
        projections[-1].build(shape)
    variables = student.trainable_variables + [v for layer in projections for v in layer.trainable_variables]
    optimizer = keras().optimizers.Adam(learning_rate)
    batches = (
        tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train, tuple(targets)))
        .shuffle(len(splits.y_train), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
    )

    @tf.function
    def step(x, y, targets):
        with tf.GradientTape() as tape:
            *s_states, s_logits = tf.nest.flatten(student_outputs(x, training=True))
            states = {}
            for (kind, _, _), project, s, t in zip(pairs, projections, s_states, targets):
                states.setdefault(kind, []).append((project(s), t))
            terms = loss_terms(y, s_logits, targets[-1], weights, states)
            terms["loss"] = tf.add_n([getattr(weights, name) * value for name, value in terms.items()])
        optimizer.apply_gradients(zip(tape.gradient(terms["loss"], variables), variables))
        return terms

    history: dict[str, list[float]] = {}
    for _ in range(epochs):
        per_batch = [step(x, y, t) for x, y, t in batches]
        epoch = {name: np.mean([float(terms[name]) for terms in per_batch]) for name in per_batch[0]}
        predicted = np.argmax(student.predict(splits.x_val, batch_size=256, verbose=0), axis=-1)
        epoch["val_accuracy"] = np.mean(predicted == splits.y_val)
        for name, value in epoch.items():
            history.setdefault(name, []).append(round(float(value), 5))
    refreshed = batchnorm.refresh(student, splits)
    return {**history, "batchnorm": refreshed} if refreshed else history
