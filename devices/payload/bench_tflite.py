"""Time one TFLite model on this device and print one JSON line.

Pushed to the device by slimlab's ``python`` runner; it needs only NumPy and
LiteRT (or tflite_runtime). Protocol: warm-up, then at least ``--runs``
invocations *and* at least ``--min-seconds`` (MLPerf-style), keeping every
per-iteration latency.
"""

import argparse
import json
import platform
import time


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        import ai_edge_litert as runtime
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter

            import tflite_runtime as runtime
        except ImportError:
            from tensorflow.lite import Interpreter

            import tensorflow as runtime
    return Interpreter, f"{runtime.__name__} {getattr(runtime, '__version__', '?')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-runs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np

    Interpreter, runtime = interpreter_class()
    start = time.perf_counter_ns()
    interpreter = Interpreter(model_path=args.model, num_threads=args.threads)
    interpreter.allocate_tensors()
    init_ms = (time.perf_counter_ns() - start) / 1e6

    rng = np.random.default_rng(args.seed)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, size=detail["shape"], endpoint=True).astype(dtype)
        else:
            value = rng.random(detail["shape"], dtype=np.float32).astype(dtype)
        interpreter.set_tensor(detail["index"], value)

    def timed_invoke() -> float:
        t0 = time.perf_counter_ns()
        interpreter.invoke()
        return (time.perf_counter_ns() - t0) / 1e6

    first_ms = timed_invoke()
    for _ in range(args.warmup):
        interpreter.invoke()
    latencies = []
    began = time.perf_counter()
    while len(latencies) < args.max_runs and (
        len(latencies) < args.runs or time.perf_counter() - began < args.min_seconds
    ):
        latencies.append(timed_invoke())
    print(json.dumps({
        "runtime": runtime,
        "threads": args.threads,
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "warmup": args.warmup,
        "latencies_ms": latencies,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
