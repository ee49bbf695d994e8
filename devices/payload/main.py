"""Time one model in its own runtime on this device and print one result line.

Run as ``python3 slimlab-payload.pyz --runtime tflite --model model.tflite ...``. The
payload imports nothing from slimlab: only NumPy and the runtime it is asked for. One
timing loop serves every runtime: warm-up, then at least ``--runs`` invocations *and*
at least ``--min-seconds`` (MLPerf-style), keeping every per-iteration latency, but
never more than ``--max-samples`` (memory stays bounded; the result then says the cap
stopped the loop before the time floor).

The result is one line, ``slimlab-result: {json}``, last on stdout: runtimes print to
stdout themselves (MNN from C, whose buffer may flush after ours), so the runner looks
for the prefix rather than trusting the last line. Bad options and missing runtimes
exit 2 with one ``slimlab-payload: error: ...`` line.
"""

import argparse
import fcntl
import json
import os
import platform
import time

from slimlab_payload import context, evaluate
from slimlab_payload.runtime import PayloadError, adapter, check_options

RESULT_PREFIX = "slimlab-result: "


def hold_device_lock(path: str | None, wait_s: float):
    """Hold ``path`` with flock while this process lives: one benchmark per device, whoever started it."""
    if not path:
        return None
    # Read-only is enough for flock, so a lock file another user created works too.
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    lock = os.fdopen(os.open(path, os.O_RDONLY | os.O_CREAT, 0o644))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise PayloadError(f"the device is busy: another benchmark holds {path}") from None
            time.sleep(0.2)


def measure(args) -> dict:
    runtime_class, schema = adapter(args.runtime)
    options = check_options(args.runtime, json.loads(args.options), schema)
    lock = hold_device_lock(args.lock, args.lock_wait_s)
    # Pinned before NumPy and the runtime start any thread, so that every thread inherits the mask.
    affinity = context.pin(args.affinity)

    import numpy as np

    runtime = runtime_class(np)
    # Cooled down last thing before the model loads: a missing runtime fails without the wait.
    sysfs = context.Sysfs(args.context_root)
    cooldown = None
    if args.cooldown_max_temp_c is not None:
        cooldown = context.cool_down(sysfs, args.cooldown_max_temp_c, args.cooldown_timeout_s, args.cooldown_poll_s)
    rss_before = context.rss_kib()
    start = time.perf_counter_ns()
    runtime.load(args.model, args.threads, options)
    init_ms = (time.perf_counter_ns() - start) / 1e6
    rss_loaded = context.rss_kib()
    runtime.feed(np.random.default_rng(args.seed), args.input_shape)

    def timed_invoke() -> float:
        t0 = time.perf_counter_ns()
        runtime.invoke()
        return (time.perf_counter_ns() - t0) / 1e6

    first_ms = timed_invoke()
    for _ in range(args.warmup):
        runtime.invoke()
    latencies = []
    before = context.snapshot(sysfs)
    began = time.perf_counter()
    while len(latencies) < args.max_samples and (
        len(latencies) < args.runs or time.perf_counter() - began < args.min_seconds
    ):
        latencies.append(timed_invoke())
    timed_ended = time.perf_counter()
    after = context.snapshot(sysfs)
    # After the timed runs, so that it never warms or disturbs them; still under the device's lock.
    evaluation = evaluate.evaluate(np, runtime, args.evaluate) if args.evaluate else None
    if lock is not None:
        lock.close()
    return {
        "runtime": runtime.version,
        "threads": args.threads,
        "options": runtime.applied(),
        **runtime.observed(),
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "warmup": args.warmup,
        "latencies_ms": latencies,
        "timed_s": timed_ended - began,
        "timed_ended": timed_ended,
        "sample_cap_reached": len(latencies) >= args.max_samples and timed_ended - began < args.min_seconds,
        "memory": {"peak_rss_kib": context.peak_rss_kib(), "rss_before_load_kib": rss_before,
                   "rss_after_load_kib": rss_loaded,
                   "load_growth_kib": None if None in (rss_before, rss_loaded) else rss_loaded - rss_before,
                   **runtime.memory()},
        "machine": platform.machine(),
        "cpu": context.cpu_model(),
        "python": platform.python_version(),
        "context": {"root": args.context_root, "affinity": affinity, "process_threads": context.process_threads(),
                    "cooldown": cooldown, "before": before, "after": after, "cpu": context.cpu()},
        "evaluation": evaluation,
    }


def compare(args) -> dict:
    """Time ``--baseline-model`` and ``--model`` side by side in one process, in alternating rounds.

    Round i times one model, then the other (the order flips every round), each for an
    equal share of ``--runs`` and ``--min-seconds``, so drift of the device hits both alike.
    A first round is timed and dropped: it warms what a fresh process has cold.
    Each round makes both instances afresh, in that round's order, and feeds them the same
    inputs: two instances of one file can differ for as long as they live (where their
    buffers and packed weights sit, which was made first), and that difference must fall
    into the noise between rounds, not bias every round alike. ``load`` says how many
    cores' worth of other work ran beside the rounds.
    """
    runtime_class, schema = adapter(args.runtime)
    options = check_options(args.runtime, json.loads(args.options), schema)
    lock = hold_device_lock(args.lock, args.lock_wait_s)
    affinity = context.pin(args.affinity)

    import numpy as np

    sysfs = context.Sysfs(args.context_root)
    files = {"baseline": args.baseline_model, "candidate": args.model}

    def fresh(side: str):
        runtime = runtime_class(np)
        runtime.load(files[side], args.threads, options)
        runtime.feed(np.random.default_rng(args.seed), args.input_shape)
        for _ in range(args.warmup):
            runtime.invoke()
        return runtime

    per_round_runs = max(1, -(-args.runs // args.rounds))
    per_round_s = args.min_seconds / args.rounds
    rounds, models = [], {}
    before = context.snapshot(sysfs)
    other_work = context.OtherWork()
    # Round -1 warms what a fresh process has cold (caches, allocator, the CPU's clock) and is not kept.
    for index in range(-1, args.rounds):
        sides = ("baseline", "candidate") if index % 2 == 0 else ("candidate", "baseline")
        models.clear()  # last round's instances go before this round's are made
        models.update((side, fresh(side)) for side in sides)
        timed = {}
        for side in sides:
            runtime, samples, began = models[side], [], time.perf_counter()
            while len(samples) < args.max_samples and (
                    len(samples) < per_round_runs or time.perf_counter() - began < per_round_s):
                t0 = time.perf_counter_ns()
                runtime.invoke()
                samples.append((time.perf_counter_ns() - t0) / 1e6)
            timed[side] = samples
        if index >= 0:
            rounds.append(timed)
    load = other_work.since()
    after = context.snapshot(sysfs)
    if lock is not None:
        lock.close()
    return {"runtime": models["candidate"].version, "threads": args.threads,
            "options": models["candidate"].applied(), "rounds": rounds, "load": load, "machine": platform.machine(),
            "cpu": context.cpu_model(),
            "context": {"root": args.context_root, "affinity": affinity, "process_threads": context.process_threads(),
                        "cooldown": None, "before": before, "after": after, "cpu": context.cpu()}}


def int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimlab-payload", description=__doc__.split("\n")[0])
    p.add_argument("--runtime", required=True, help="the format whose runtime adapter runs the model")
    p.add_argument("--model", required=True, nargs="+", help="the model's files, main first (ncnn: .param .bin)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--options", default="{}", help="runtime options as a JSON object")
    p.add_argument("--input-shape", type=int_list, help="comma-separated; needed where the model does not say (ncnn)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--max-samples", type=int, default=100_000, help="stop here even before --min-seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate", help="an .npz of test samples, their labels and the host's logits: after timing, "
                   "run every sample and report accuracy and agreement with the host")
    p.add_argument("--baseline-model", nargs="+", help="compare: the baseline's files, timed in rounds with --model's")
    p.add_argument("--rounds", type=int, default=10, help="compare: how many alternating rounds")
    p.add_argument("--lock", help="a file to flock while measuring, so two benchmarks never share the device")
    p.add_argument("--lock-wait-s", type=float, default=600.0)
    p.add_argument("--context-root", default="/", help="prefix of the sysfs paths read for the run context")
    p.add_argument("--affinity", type=int_list, help="comma-separated CPU ids to pin the process to")
    p.add_argument("--cooldown-max-temp-c", type=float,
                   help="first wait until every thermal zone is below this; default: no wait")
    p.add_argument("--cooldown-timeout-s", type=float, default=120.0)
    p.add_argument("--cooldown-poll-s", type=float, default=2.0)
    return p


def main() -> None:
    args = parser().parse_args()
    try:
        result = compare(args) if args.baseline_model else measure(args)
    except (PayloadError, json.JSONDecodeError) as exc:
        parser().error(str(exc))
    if "timed_ended" in result:
        # The evaluation ran after the timed runs: the host's energy window ends this long before we return.
        result["after_timed_s"] = time.perf_counter() - result.pop("timed_ended")
    print(RESULT_PREFIX + json.dumps(result), flush=True)
