"""prune.heads: remove the least important attention heads of a transformer and shrink its Q/K/V/O projections.

After Michel et al., "Are Sixteen Heads Really Better than One?" (NeurIPS 2019). Every
head is scored on the validation split by two scorers:

- ``accuracy``: the accuracy lost when that head alone is masked (ties broken by the
  cross-entropy it adds);
- ``gradient``: the paper's importance E_x |∂L/∂ξ_h|, ξ_h a gate on the head's output;
  for ``global`` ranking each layer's scores are divided by their L2 norm, as the paper
  does, unless ``normalize: false``.

``scorer`` ranks; ``fraction`` of the heads go, the lowest ``global``ly or in each layer
(``per_layer``), each layer keeping ``min_heads``. The surgery removes their Q/K/V layers
and their rows of the output projection, so the model computes what the original
computes with them masked, with fewer MACs; then it fine-tunes for ``epochs``.

The paper's experiment ships beside the artifact as ``heads.csv``, measured on the test
split before the surgery: one row per head with both importances, the accuracy with
that head alone removed, the accuracy with it the only head left in its layer, and
whether it was removed. The sidecar records its name, the best-head-only accuracy of
each layer, the importance table and the heads left per layer.
"""

import csv
import io
from typing import Literal

import numpy as np
from pydantic import Field

from slimlab import hookimpl
from slimlab.atomic import write_bytes
from slimlab.kit import transformer
from slimlab.kit.training import class_labels, compile_and_fit
from slimlab.stages import Stage, StageParams

REPORT = "heads.csv"


class HeadsParams(StageParams):
    fraction: float = Field(0.5, ge=0, lt=1, description="share of the heads to remove")
    scope: Literal["global", "per_layer"] = Field("global", description="rank all heads together, or each layer's own")
    scorer: Literal["gradient", "accuracy"] = Field("gradient", description="gradient: Michel et al.'s importance; "
                                                    "accuracy: the accuracy lost when the head is masked")
    normalize: bool = Field(True, description="global gradient ranking: divide each layer's importances by their L2 "
                                                "norm first, as Michel et al. do")
    min_heads: int = Field(1, ge=1, le=1024, description="heads every layer keeps")
    epochs: int = Field(3, ge=0, le=10000, description="fine-tuning epochs after the surgery (0: surgery only)")
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float = Field(5e-4, gt=0, le=10)


def evaluate(model, x, y) -> tuple[float, float]:
    """Accuracy and mean cross-entropy."""
    logits = model.predict(x, batch_size=500, verbose=0).astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(np.mean(np.argmax(logits, -1) == y)), float(-np.mean(log_p[np.arange(len(y)), y]))


def masked_scores(model, x, y, heads: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[float, float]]:
    """Per head: (accuracy lost, cross-entropy added) when it alone is masked."""
    accuracy, loss = evaluate(model, x, y)
    scores = {}
    for head in heads:
        with transformer.masked(model, {head}):
            masked_accuracy, masked_loss = evaluate(model, x, y)
        scores[head] = (accuracy - masked_accuracy, masked_loss - loss)
    return scores


def ranking(scores: dict, params: HeadsParams) -> dict[tuple[int, int], tuple]:
    """A sort key per head, lowest first to go."""
    if params.scorer == "accuracy":
        return scores
    if params.scope == "per_layer" or not params.normalize:
        return {head: (value,) for head, value in scores.items()}
    norms = {}
    for (block, _), value in scores.items():
        norms[block] = norms.get(block, 0.0) + value**2
    return {(block, h): (value / (np.sqrt(norms[block]) or 1.0),) for (block, h), value in scores.items()}


def choose(present: dict[int, list[int]], keys: dict, params: HeadsParams) -> set[tuple[int, int]]:
    """The heads to remove: the lowest ``fraction``, globally or per layer, each layer keeping ``min_heads``."""
    removed = set()
    if params.scope == "per_layer":
        for block, heads in present.items():
            count = min(round(params.fraction * len(heads)), max(len(heads) - params.min_heads, 0))
            removed |= set(sorted(((block, h) for h in heads), key=keys.get)[:count])
        return removed
    left = {block: len(heads) for block, heads in present.items()}
    target = round(params.fraction * sum(left.values()))
    for block, head in sorted(keys, key=keys.get):
        if len(removed) == target:
            break
        if left[block] > params.min_heads:
            removed.add((block, head))
            left[block] -= 1
    return removed


def sixteen_heads_table(model, x, y, heads: list[tuple[int, int]]) -> dict[tuple[int, int], dict]:
    """The paper's experiment on (x, y): accuracy with each head alone removed, and with it alone kept in its layer."""
    table = {}
    for block, head in heads:
        others = {(b, h) for b, h in heads if b == block and h != head}
        with transformer.masked(model, {(block, head)}):
            without, _ = evaluate(model, x, y)
        with transformer.masked(model, others):
            alone, _ = evaluate(model, x, y)
        table[(block, head)] = {"test_accuracy_without": without, "test_accuracy_alone_in_layer": alone}
    return table


def write_report(path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_bytes(path, text.getvalue().encode())


def prune_heads(artifact, params: HeadsParams, ctx):
    """Score heads (masked accuracy, gradient importance), remove the lowest, shrink Q/K/V/O, fine-tune."""
    model, splits = artifact.model, ctx.splits
    transformer.require(model, "input model", "prune.heads")
    class_labels(splits, "prune.heads")
    present = transformer.heads(model)
    heads = [(block, head) for block, indices in present.items() for head in indices]
    accuracy_drop = masked_scores(model, splits.x_val, splits.y_val, heads)
    gradient = transformer.gradient_importance(model, splits.x_val, splits.y_val)
    keys = ranking(accuracy_drop if params.scorer == "accuracy" else gradient, params)
    removed = choose(present, keys, params)
    table = sixteen_heads_table(model, splits.x_test, splits.y_test, heads)
    rows = [{"block": block, "head": head, "accuracy_drop_val": round(accuracy_drop[(block, head)][0], 5),
             "gradient_importance_val": round(gradient[(block, head)], 6),
             **{k: round(v, 5) for k, v in table[(block, head)].items()}, "removed": (block, head) in removed}
            for block, head in heads]
    write_report(ctx.workdir / REPORT, rows)
    best = {block: max((row for row in rows if row["block"] == block), key=lambda row: row["test_accuracy_alone_in_layer"])
            for block in present}

    pruned = transformer.remove_heads(model, removed)
    surgery_only, _ = evaluate(pruned, splits.x_test, splits.y_test)
    history = {}
    if params.epochs:
        history = compile_and_fit(pruned, splits, epochs=params.epochs, batch_size=params.batch_size,
                                  learning_rate=params.learning_rate, seed=ctx.seed)
    left = transformer.heads(pruned)
    ctx.record(
        history=history,
        report=REPORT,
        test_accuracy_before=evaluate(model, splits.x_test, splits.y_test)[0],
        test_accuracy_before_fine_tuning=surgery_only,
        best_head_only={f"block{block}": {"head": row["head"], "test_accuracy": row["test_accuracy_alone_in_layer"]}
                        for block, row in best.items()},
        importance={f"block{block}": {f"head{row['head']}": {"accuracy_drop": row["accuracy_drop_val"],
                                                              "gradient": row["gradient_importance_val"]}
                                      for row in rows if row["block"] == block} for block in present},
        heads_left={f"block{block}": indices for block, indices in left.items()},
        heads_before=len(heads), heads_after=sum(map(len, left.values())),
        params_before=model.count_params(), params_after=pruned.count_params(),
    )
    return pruned


@hookimpl
def register_stages(register):
    register(Stage("prune.heads", prune_heads, HeadsParams, inputs=("keras",), output="keras", fine_tunes=True))
