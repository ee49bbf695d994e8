"""Numerical parity of a converted model with the model it was converted from.

The new model runs on the test split in its own runtime; the source's logits on
the same split were cached beside its artifact when it was made, so the source is
never reloaded in its framework. The numbers go into the converted artifact's
sidecar (``metrics.parity``); the report flags ``parity_failed`` when they miss
the bounds.
"""

import numpy as np

# Float conversions must be numerically the same model; reduced-precision ones (fp16,
# int8 weights) only need to agree on the predicted class.
FLOAT_BOUNDS = {"min_agreement": 0.995, "max_abs_diff_rel": 1e-3}
QUANTIZED_BOUNDS = {"min_agreement": 0.98, "max_abs_diff_rel": None}


def compare(expected: np.ndarray, actual: np.ndarray, quantized: bool, reference: str) -> dict:
    """Top-1 agreement and max/mean |logit difference| (also relative to the reference's logit range)."""
    actual = actual.reshape(expected.shape)
    diff = np.abs(actual.astype(np.float64) - expected)
    logit_range = float(np.ptp(expected)) or 1.0
    bounds = QUANTIZED_BOUNDS if quantized else FLOAT_BOUNDS
    result = {
        "reference": reference,
        "samples": int(len(expected)),
        "agreement": float(np.mean(np.argmax(actual, -1) == np.argmax(expected, -1))),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "logit_range": logit_range,
        "max_abs_diff_rel": float(diff.max()) / logit_range,
        "bounds": bounds,
    }
    result["passed"] = bool(
        result["agreement"] >= bounds["min_agreement"]
        and (bounds["max_abs_diff_rel"] is None or result["max_abs_diff_rel"] <= bounds["max_abs_diff_rel"])
    )
    return result


def record(ctx, source, fmt, model, reduced_precision: bool = False) -> None:
    """Compare ``model`` (of format ``fmt``) with ``source`` on the test split; store ``metrics.parity``.

    The quantized bound applies if the converter reduced precision or the source was quantized.
    """
    quantized = reduced_precision or any(step.stage.startswith("quantize.") for step in source.lineage)
    actual = fmt.predict(model, ctx.splits.x_test)
    ctx.record(parity=compare(source.test_logits, actual, quantized, source.kind))
