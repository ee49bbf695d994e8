"""Transformer encoders for stage authors: where the heads, attention matrices and hidden states are, and head surgery.

An encoder whose layers follow these names can be head-pruned (``prune.heads``) and
distilled layer by layer (``distill``); ``plugins/models/vit.py`` builds one:

- ``embedding``: the token embeddings that enter block 0 (TinyBERT's embedding layer);
- ``block{i}_head{j}_q`` / ``_k`` / ``_v``: Dense layers from the width to head ``j``'s size;
- ``block{i}_head{j}_scores``: the scaled dot products QKᵀ/√d (tokens × tokens), and
  ``block{i}_head{j}_attention`` their softmax, the attention matrix;
- ``block{i}_head{j}_context``: the head's output (attention · V);
- ``block{i}_heads``: the heads' outputs concatenated in head order (absent with one head),
  and ``block{i}_o`` the Dense back to the width: rows ``[k·d, (k+1)·d)`` of its kernel read
  the k-th head present;
- ``block{i}_out``: the block's output hidden state.

With cross-layer sharing (ALBERT) the weighted layers exist once, named after block 0,
and every block calls them; the weightless layers (scores, attention, context, heads,
out) are per block, so each block's attention matrices and hidden state can be read.
A head is identified by its weighted block and index: ``(0, 2)`` in a shared model is
head 2 of every block.
"""

import re
from contextlib import contextmanager

import numpy as np

from slimlab.errors import ConfigError
from slimlab.kit.training import keras

EMBEDDING = "embedding"
_HEAD_LAYER = re.compile(r"^block(\d+)_head(\d+)_")


def layer_name(block: int, part: str, head: int | None = None) -> str:
    """``block{block}_{part}``, or ``block{block}_head{head}_{part}`` for a per-head layer."""
    return f"block{block}_{part}" if head is None else f"block{block}_head{head}_{part}"


def _names(model) -> set[str]:
    return {layer.name for layer in model.layers}


def depth(model) -> int:
    """The number of encoder blocks the model runs (0: not a transformer to this contract)."""
    names = _names(model)
    count = 0
    while layer_name(count, "out") in names:
        count += 1
    return count


def weighted_block(model, block: int) -> int:
    """The block whose weights block ``block`` runs: itself, or block 0 in a shared model."""
    return block if layer_name(block, "o") in _names(model) else 0


def heads(model) -> dict[int, list[int]]:
    """Weighted block -> the indices of its heads, ascending."""
    names = _names(model)
    found = {}
    for block in sorted({weighted_block(model, i) for i in range(depth(model))}):
        found[block] = sorted(int(m.group(2)) for name in names
                              if (m := _HEAD_LAYER.match(name)) and int(m.group(1)) == block and name.endswith("_q"))
    return found


def require(model, who: str, stage: str) -> None:
    if not depth(model):
        raise ConfigError(f"{stage}: the {who} is not a transformer with block{{i}}_out layers "
                          "(see slimlab/kit/transformer.py); build it with model vit")


def head_rows(model, block: int) -> dict[int, np.ndarray]:
    """Head -> the rows of ``block{block}_o``'s kernel that read it."""
    present = heads(model)[block]
    size = model.get_layer(layer_name(block, "q", present[0])).units
    return {head: np.arange(k * size, (k + 1) * size) for k, head in enumerate(present)}


def attention_layers(model, block: int, kind: str = "attention") -> list[str]:
    """Block ``block``'s per-head ``attention`` (softmax) or ``scores`` layers, in head order."""
    return [layer_name(block, kind, head) for head in heads(model)[weighted_block(model, block)]]


@contextmanager
def masked(model, removed: set[tuple[int, int]]):
    """``model`` with the heads ``removed`` ((block, head) pairs) silenced: their rows of O are zero inside."""
    saved = {}
    for block in {block for block, _ in removed}:
        o = model.get_layer(layer_name(block, "o"))
        saved[block] = o.kernel.numpy()
        rows = head_rows(model, block)
        kernel = saved[block].copy()
        kernel[np.concatenate([rows[head] for b, head in removed if b == block])] = 0
        o.kernel.assign(kernel)
    try:
        yield model
    finally:
        for block, kernel in saved.items():
            model.get_layer(layer_name(block, "o")).kernel.assign(kernel)


def remove_heads(model, removed: set[tuple[int, int]]):
    """A new model without the heads ``removed``: their Q/K/V layers go, and each output projection loses their rows.

    It computes what ``model`` computes with those heads masked. Every block keeps at least one head.
    """
    present = heads(model)
    for block, kept in present.items():
        if not set(kept) - {head for b, head in removed if b == block}:
            raise ConfigError(f"prune.heads: block {block} would lose all {len(kept)} heads; keep at least one")
    drop = {layer.name for layer in model.layers
            if (m := _HEAD_LAYER.match(layer.name)) and (weighted_block(model, int(m.group(1))), int(m.group(2))) in removed}
    config = model.get_config()
    # A Concatenate left with one input cannot be rebuilt from a config: its reader takes that input's place.
    single = {}
    for layer in config["layers"]:
        if re.fullmatch(r"block\d+_heads", layer["name"]):
            layer["inbound_nodes"] = [[entry for entry in node if entry[0] not in drop] for node in layer["inbound_nodes"]]
            if len(layer["inbound_nodes"][0]) == 1:
                single[layer["name"]] = layer["inbound_nodes"][0][0]
    config["layers"] = [layer for layer in config["layers"] if layer["name"] not in drop | set(single)]
    for layer in config["layers"]:
        if re.fullmatch(r"block\d+_(heads|o)", layer["name"]):
            layer.pop("build_config", None)  # its input got narrower
        layer["inbound_nodes"] = [[single.get(entry[0], entry) for entry in node] for node in layer["inbound_nodes"]]
    pruned = keras().Model.from_config(config)
    for layer in pruned.layers:
        weights = model.get_layer(layer.name).get_weights()
        if m := re.fullmatch(r"block(\d+)_o", layer.name):
            block = int(m.group(1))
            rows = head_rows(model, block)
            weights[0] = weights[0][np.concatenate([rows[h] for h in present[block] if (block, h) not in removed])]
        layer.set_weights(weights)
    return pruned


def gradient_importance(model, x: np.ndarray, y: np.ndarray, batch_size: int = 50) -> dict[tuple[int, int], float]:
    """Each head's importance as in Michel et al. (2019): E_x |∂L(x)/∂ξ_h|, ξ_h a gate on the head's output.

    A gate scales the head's rows of the output projection, so ∂L/∂ξ_h at ξ = 1 is
    Σ W ⊙ ∂L/∂W over those rows; per-example gradients come from a Jacobian over the batch.
    """
    import tensorflow as tf

    blocks = heads(model)
    kernels = [model.get_layer(layer_name(block, "o")).kernel for block in blocks]
    rows = {block: head_rows(model, block) for block in blocks}
    totals = {(block, head): 0.0 for block, present in blocks.items() for head in present}
    for start in range(0, len(x), batch_size):
        xb, yb = tf.constant(x[start:start + batch_size]), tf.constant(y[start:start + batch_size])
        with tf.GradientTape() as tape:
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=model(xb, training=False))
        jacobians = tape.jacobian(losses, kernels)
        for block, kernel, jacobian in zip(blocks, kernels, jacobians):
            per_row = tf.reduce_sum(jacobian * kernel[None], axis=-1).numpy()  # (batch, rows)
            for head, head_rows_ in rows[block].items():
                totals[(block, head)] += float(np.abs(per_row[:, head_rows_].sum(axis=1)).sum())
    return {key: value / len(x) for key, value in totals.items()}


def copy_blocks(student, teacher, block_map: dict[int, int]) -> None:
    """DistilBERT's initialisation: student block i takes teacher block ``block_map[i]``'s weights, the rest by name.

    The layers outside the blocks (patch embedding, embedding, norm, logits) are copied by
    name; every copied layer must have the same shapes in both models.
    """
    def copy(to_layer, from_name):
        source = teacher.get_layer(from_name).get_weights()
        if [w.shape for w in source] != [w.shape for w in to_layer.get_weights()]:
            raise ConfigError(f"distill: student_init teacher_layers: student layer {to_layer.name!r} and teacher layer "
                              f"{from_name!r} differ in shape; the student needs the teacher's width, heads and MLP size")
        to_layer.set_weights(source)

    teacher_names = _names(teacher)
    for layer in student.layers:
        if not layer.weights:
            continue
        if m := re.match(r"^block(\d+)_(.*)$", layer.name):
            copy(layer, f"block{block_map[int(m.group(1))]}_{m.group(2)}")
        elif layer.name in teacher_names:
            copy(layer, layer.name)


def attention_macs(model) -> int:
    """MACs of the attention products of one inference, QKᵀ and A·V: 2·T²·d per head and block.

    They are batch matmuls between activations, which counts of Dense and Conv kernels leave out.
    """
    total = 0
    for block in range(depth(model)):
        for head in heads(model)[weighted_block(model, block)]:
            tokens = model.get_layer(layer_name(block, "scores", head)).output.shape[-1]
            total += 2 * tokens * tokens * model.get_layer(layer_name(weighted_block(model, block), "q", head)).units
    return total
