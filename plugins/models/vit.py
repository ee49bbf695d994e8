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

from pydantic import PositiveInt

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
):
    """``width`` is split evenly over ``heads``; the MLP has ``mlp_ratio`` × ``width`` hidden units."""
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

    inputs = layers.Input(input_shape)
    x = layers.Conv2D(embed_dim or width, patch, strides=patch, name="patch_embed")(inputs)
    x = layers.Reshape((tokens, embed_dim or width), name="tokens")(x)
    if embed_dim:
        x = layers.Dense(width, name="patch_factor")(x)
    # An epsilon below 1.001e-5 keeps tf_keras off its fused path, which takes only a 1-D scale.
    x = layers.LayerNormalization(axis=[1, 2], epsilon=1e-6, name=EMBEDDING)(x)
    for block in range(depth):
        h = shared(block, "ln1", lambda name: layers.LayerNormalization(name=name))(x)
        contexts = []
        for head in range(heads):
            q, k, v = (shared(block, part, lambda name: layers.Dense(size, name=name), head)(h) for part in "qkv")
            q = layers.Rescaling(1 / math.sqrt(size), name=layer_name(block, "scale", head))(q)
            scores = layers.Dot(axes=2, name=layer_name(block, "scores", head))([q, k])
            attention = layers.Softmax(name=layer_name(block, "attention", head))(scores)
            contexts.append(layers.Dot(axes=(2, 1), name=layer_name(block, "context", head))([attention, v]))
        merged = layers.Concatenate(name=layer_name(block, "heads"))(contexts)
        x = layers.Add(name=layer_name(block, "residual"))([x, shared(block, "o", lambda name: layers.Dense(width, name=name))(merged)])
        h = shared(block, "ln2", lambda name: layers.LayerNormalization(name=name))(x)
        h = shared(block, "mlp1", lambda name: layers.Dense(mlp_ratio * width, activation="gelu", name=name))(h)
        h = shared(block, "mlp2", lambda name: layers.Dense(width, name=name))(h)
        x = layers.Add(name=layer_name(block, "out"))([x, h])
    x = layers.LayerNormalization(name="norm")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras().Model(inputs, layers.Dense(num_classes, name="logits")(x), name="vit_shared" if share else "vit")


@hookimpl
def register_models(register):
    register(Architecture("vit", build_vit))
