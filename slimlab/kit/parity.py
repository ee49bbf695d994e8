"""Numerical parity of a converted model with the model it was converted from.

The new model runs on the test split in its own runtime; the source's logits on
the same split were cached beside its artifact when it was made, so the source is
never reloaded in its framework. The numbers go into the converted artifact's
sidecar (``metrics.parity``); the report flags ``parity_failed`` when they miss
the bounds (:mod:`slimlab.parity_bounds`).
"""

import numpy as np

from slimlab.parity_bounds import bounds, is_quantized
from slimlab_payload.evaluate import agreement


def compare(expected: np.ndarray, actual: np.ndarray, quantized: bool, reference: str) -> dict:
    """Top-1 agreement and max/mean |logit difference| (also relative to the reference's logit range).

    The numbers come from the device payload's own function, so a device's evaluation measures the same way."""
    found = bounds(quantized)
    result = {"reference": reference, **agreement(np, expected, actual), "bounds": found}
    result["passed"] = bool(
        result["agreement"] >= found["min_agreement"]
        and (found["max_abs_diff_rel"] is None or result["max_abs_diff_rel"] <= found["max_abs_diff_rel"])
    )
    return result


def record(ctx, source, fmt, model, reduced_precision: bool = False) -> None:
    """Compare ``model`` (of format ``fmt``) with ``source`` on the test split; store ``metrics.parity``.

    The quantized bound applies if the converter reduced precision or the source was quantized.
    """
    actual = fmt.predict(model, ctx.splits.x_test)
    ctx.record(parity=compare(source.test_logits, actual, is_quantized(source.lineage, reduced_precision), source.kind))
