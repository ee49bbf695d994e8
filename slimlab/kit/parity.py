"""Numerical parity of a converted model with the model it was converted from.

The new model runs on the test split in its own runtime; the source's outputs on
the same split were cached beside its artifact when it was made, so the source is
never reloaded in its framework. The numbers go into the converted artifact's
sidecar (``metrics.parity``): fidelity per output, the task's agreement, and whether
they meet the bar (:mod:`slimlab.parity_bounds`); the report flags ``parity_failed``.
"""

import numpy as np

from slimlab.parity_bounds import is_quantized, judge
from slimlab_payload.evaluate import align, fidelity


def compare(expected: dict, actual: dict, quantized: bool, reference: str, task=None) -> dict:
    """Per-output fidelity of ``actual`` to ``expected`` (matched by name, else order and size), the task's
    agreement (``task``: a (Task, params) pair), and the verdict.

    The numbers come from the device payload's own functions, so a device's evaluation measures the same way."""
    actual = align(np, expected, actual)
    outputs = {name: fidelity(np, expected[name], actual[name]) for name in expected}
    agreement = task[0].agreement(task[1], expected, actual) if task else {}
    verdict = judge(outputs, min(agreement.values()) if agreement else None, quantized)
    samples = len(next(iter(expected.values())))
    return {"reference": reference, "samples": samples, "outputs": outputs, "task_agreement": agreement, **verdict}


def record(ctx, source, fmt, model, reduced_precision: bool = False) -> None:
    """Compare ``model`` (of format ``fmt``) with ``source`` on the test split; store ``metrics.parity``.

    The quantized bound applies if the converter reduced precision or the source was quantized.
    """
    actual = fmt.predict(model, ctx.splits.x_test)
    ctx.record(parity=compare(source.test_outputs, actual, is_quantized(source.lineage, reduced_precision),
                              source.kind, ctx.task))
