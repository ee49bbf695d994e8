"""The parity bar: how close a model run elsewhere (another format's runtime, a device) must come to its reference.

:mod:`slimlab.kit.parity` judges conversions by it, and the lab judges a device's own
evaluation of an artifact (``device_eval``) by the same numbers.
"""

# Float models must be numerically the same model; reduced-precision ones (fp16,
# int8 weights) only need to agree on the predicted class.
FLOAT_BOUNDS = {"min_agreement": 0.995, "max_abs_diff_rel": 1e-3}
QUANTIZED_BOUNDS = {"min_agreement": 0.98, "max_abs_diff_rel": None}


def is_quantized(lineage, reduced_precision: bool = False) -> bool:
    """Whether the quantized bounds apply: the converter reduced precision, or a step of the lineage quantized."""
    return reduced_precision or any(step.stage.startswith("quantize.") for step in lineage)


def bounds(quantized: bool) -> dict:
    return QUANTIZED_BOUNDS if quantized else FLOAT_BOUNDS
