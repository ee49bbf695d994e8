"""The parity bar: how close a model run elsewhere (another format's runtime, a device) must come to its reference.

:mod:`slimlab.kit.parity` judges conversions by it, and the lab judges a device's own
evaluation of an artifact (``device_eval``) by the same numbers.
"""

# Float models must be numerically the same model; reduced-precision ones (fp16,
# int8 weights, or fp16 runtime options on a GPU) only need to agree on the predicted class
# (or, for a task that predicts no class, to keep every output's direction: cosine).
FLOAT_BOUNDS = {"min_agreement": 0.995, "max_abs_diff_rel": 1e-3}
QUANTIZED_BOUNDS = {"min_agreement": 0.98, "max_abs_diff_rel": None}


def is_quantized(lineage, reduced_precision: bool = False) -> bool:
    """Whether the quantized bounds apply: the converter reduced precision, or a step of the lineage quantized."""
    return reduced_precision or any(step.stage.startswith("quantize.") for step in lineage)


# ncnn's fp16 flags (each on unless an option set turns it off): on a Vulkan GPU they store and compute in fp16.
GPU_FP16_FLAGS = ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed")


def reduced_precision_options(options: dict) -> bool:
    """Whether runtime options run a float model in reduced precision: ncnn on a Vulkan GPU with fp16 storage or
    arithmetic, as ncnn does there unless told not to."""
    return bool(options.get("use_vulkan_compute")) and any(options.get(flag, True) for flag in GPU_FP16_FLAGS)


def bounds(quantized: bool) -> dict:
    return QUANTIZED_BOUNDS if quantized else FLOAT_BOUNDS


def judge(outputs: dict, agreement: float | None, quantized: bool) -> dict:
    """Whether per-output fidelity (:func:`slimlab_payload.evaluate.fidelity`) and the task's agreement meet the
    bar. A task without an agreement of its own (not a classifier) is held to its outputs' least cosine instead,
    and every output's max |difference| counts."""
    bar = bounds(quantized)
    agreed = agreement if agreement is not None else min(found["cosine"] for found in outputs.values())
    worst = max(found["max_abs_diff_rel"] for found in outputs.values())
    passed = agreed >= bar["min_agreement"] and (bar["max_abs_diff_rel"] is None or worst <= bar["max_abs_diff_rel"])
    return {"agreement": agreed, "max_abs_diff_rel": worst, "bounds": bar, "passed": bool(passed)}
