"""vit: a small Vision Transformer for digit images, with ALBERT's two parameter savers as options.

Non-overlapping ``patch``×``patch`` patches become tokens (a strided Conv2D), then
``depth`` pre-norm encoder blocks of multi-head self-attention and an MLP, then a
mean over the tokens and the logits:

- ``embed_dim`` (ALBERT's factorized embedding): patch → ``embed_dim`` → ``width``
  instead of patch → ``width``;
- ``share`` (ALBERT's cross-layer sharing): one block's weights, run ``depth`` times.

Every layer is a built-in tf_keras layer, so artifacts load and convert without
custom code; attention is written out per head with Dense, Dot and Softmax (no
einsum), and the layer names follow ``slimlab.kit.transformer``, where
``prune.heads`` and ``distill`` find each head's Q/K/V/O and attention matrix. The
``embedding`` layer is a LayerNormalization over tokens × width: its learned
(tokens, width) offset is the position embedding.
"""

import math
from typing import Annotated

from pydantic import Field, PositiveInt

from slimlab import hookimpl
from slimlab.errors import ConfigError
from slimlab.kit.training import Architecture, keras
from slimlab.kit.transformer import EMBEDDING, layer_name


def build_vit(
    input_shape,
    num_classes,
    patch: PositiveInt = 7,
    depth: PositiveInt = 4,
    width: PositiveInt = 64,
    heads: PositiveInt = 4,
    mlp_ratio: PositiveInt = 2,
    embed_dim: PositiveInt | None = None,
    share: bool = False,
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0,
    augment: Annotated[float, Field(ge=0, lt=0.5)] = 0.0,
):
    """``width`` is split evenly over ``heads``; the MLP has ``mlp_ratio`` × ``width`` hidden units.

    ``dropout`` applies to each block's attention and MLP outputs while training; ``augment``
    shifts each training image by up to that fraction of its size and rotates it by up to half
    that fraction of a turn (inference never sees either). The MLP uses swish: exact GELU lowers
    to ``Erfc``, which tf2onnx cannot convert.
    """
    layers = keras().layers
    height, breadth, _ = input_shape
    if height % patch or breadth % patch:
        raise ConfigError(f"vit: patch {patch} does not tile {height}×{breadth} images")
    if width % heads:
        raise ConfigError(f"vit: width {width} does not split into {heads} heads")
    size = width // heads
    tokens = (height // patch) * (breadth // patch)
    weighted = {}

    def shared(block, part, make, head=None):
        """The weighted layer of ``block`` (block 0's, when shared), made on first use."""
        name = layer_name(0 if share else block, part, head)
        if name not in weighted:
            weighted[name] = make(name)
        return weighted[name]

    def norm(name, axis=-1):
        # ViT's epsilon. Below 1.001e-5 tf_keras also stays off its fused LayerNormalization, a training-mode
        # batch norm that ncnn and MNN cannot import and that would refuse the (tokens, width) scale of `embedding`.
        return layers.LayerNormalization(axis=axis, epsilon=1e-6, name=name)

    inputs = layers.Input(input_shape)
    x = inputs
    if augment:
        x = layers.RandomTranslation(augment, augment, fill_mode="constant", name="shift")(x)
        x = layers.RandomRotation(augment / 2, fill_mode="constant", name="rotate")(x)
    x = layers.Conv2D(embed_dim or width, patch, strides=patch, name="patch_embed")(x)
    x = layers.Reshape((tokens, embed_dim or width), name="tokens")(x)
    if embed_dim:
        x = layers.Dense(width, name="patch_factor")(x)
    x = norm(EMBEDDING, axis=[1, 2])(x)
    for block in range(depth):
        h = shared(block, "ln1", norm)(x)
        contexts = []
        for head in range(heads):
            q, k, v = (shared(block, part, lambda name: layers.Dense(size, name=name), head)(h) for part in "qkv")
            q = layers.Rescaling(1 / math.sqrt(size), name=layer_name(block, "scale", head))(q)
            scores = layers.Dot(axes=2, name=layer_name(block, "scores", head))([q, k])
            attention = layers.Softmax(name=layer_name(block, "attention", head))(scores)
            contexts.append(layers.Dot(axes=(2, 1), name=layer_name(block, "context", head))([attention, v]))
        # A one-input Concatenate would not load back from its config.
        merged = contexts[0] if heads == 1 else layers.Concatenate(name=layer_name(block, "heads"))(contexts)
        attended = shared(block, "o", lambda name: layers.Dense(width, name=name))(merged)
        attended = layers.Dropout(dropout, name=layer_name(block, "drop1"))(attended)
        x = layers.Add(name=layer_name(block, "residual"))([x, attended])
        h = shared(block, "ln2", norm)(x)
        h = shared(block, "mlp1", lambda name: layers.Dense(mlp_ratio * width, activation="swish", name=name))(h)
        h = shared(block, "mlp2", lambda name: layers.Dense(width, name=name))(h)
        h = layers.Dropout(dropout, name=layer_name(block, "drop2"))(h)
        x = layers.Add(name=layer_name(block, "out"))([x, h])
    x = norm("norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras().Model(inputs, layers.Dense(num_classes, name="logits")(x), name="vit_shared" if share else "vit")


@hookimpl
def register_models(register):
    register(Architecture("vit", build_vit))
