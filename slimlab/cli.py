"""``slimlab``: the commands the workflow runs, and the ones for people.

    slimlab plugins                      loaded plugins, as JSON
    slimlab stages | formats | datasets  what the plugins registered, with their params (JSON Schema)
    slimlab init DIR                     a folder for your own experiment (config and inventory)
    slimlab validate CONFIG              check a config, its recipes, inventory, devices and data
    slimlab run-step ...                 one recipe step (used by the workflow)
    slimlab mark-failed ...              record a failed step (used by the workflow)
    slimlab bench ...                    one benchmark record (used by the workflow), with progress on stderr
    slimlab report build ...             the summary tables, page and plot (used by the workflow)
    slimlab report show [...]            the summary as a table in the terminal, filtered and sorted
    slimlab failures --summary FILE      exit 1 if a recipe step failed (used by the workflow)
    slimlab board build|up|down|status   an emulated arm64 board on this host (root)
"""

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path

from slimlab import job, zygote
from slimlab.errors import SlimlabError


def _json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _print_json(data) -> None:
    print(json.dumps(data, indent=2))


def cmd_plugins(args) -> None:
    from slimlab import registry

    _print_json(registry.describe_plugins())


def cmd_stages(args) -> None:
    from slimlab import registry

    _print_json({
        name: {"doc": stage.doc, "inputs": list(stage.inputs),
               "output": stage.output if isinstance(stage.output, str) else "(from the params)",
               "params": stage.params.model_json_schema().get("properties", {})}
        for name, stage in sorted(registry.stages().items())
    })


def cmd_formats(args) -> None:
    from slimlab import registry

    _print_json({
        name: {"doc": (sys.modules[type(fmt).__module__].__doc__ or "").strip().split("\n")[0],
               "files": list(fmt.filenames), "runtime_adapter": fmt.runtime_adapter is not None,
               "runtime_options": fmt.options_schema()["properties"]}
        for name, fmt in sorted(registry.formats().items())
    })


def cmd_datasets(args) -> None:
    from slimlab import registry

    _print_json({name: {"doc": found.doc, "params": found.params.model_json_schema().get("properties", {})}
                 for name, found in sorted(registry.datasets().items())})


def cmd_tasks(args) -> None:
    from slimlab import registry

    _print_json({name: {"doc": (type(found).__doc__ or "").strip().split("\n")[0], "needs_labels": found.needs_labels,
                        "metrics": found.better, "params": found.Params.model_json_schema()}
                 for name, found in sorted(registry.tasks().items())})


def cmd_validate(args) -> None:
    from slimlab import config, workflow

    cfg = config.load_mapping(args.config, "config")
    experiment = workflow.check(cfg, str(args.config))
    plan = experiment.plan
    splits, task = workflow.check_with_data(cfg, plan)
    labels = f"{splits.num_classes} classes" if splits.num_classes else ("labelled" if splits.labelled else "no labels")
    shapes = " + ".join(f"{n} {'x'.join(map(str, s))}" for n, s in (splits.input_shapes or {"input": splits.input_shape}).items())
    print(f"{args.config}: ok, {len(plan.recipes)} recipes, {len(plan.steps)} artifacts, "
          f"{len(plan.deployables)} deployables, {len(experiment.devices)} devices; task {task[0].name}; data: "
          f"{sum(splits.sizes().values())} samples of {shapes}, {labels}")


def cmd_init(args) -> None:
    from slimlab import scaffold

    for path in scaffold.init(args.folder):
        print(f"wrote {path}")
    print(f"next: put your data in {args.folder}/data and your model in {args.folder}/models, edit the config, "
          f"then from the slimlab checkout: snakemake --profile lab --directory {args.folder}")


def cmd_run_step(args) -> None:
    from slimlab.artifacts import Artifact
    from slimlab.stages import run_step

    result = run_step(args.step, args.input, args.output)
    if isinstance(result, Artifact):
        scores = (result.info.quality or {}).get("test", {})
        print(f"{result.sidecar}: {result.kind}, " + (", ".join(f"test {metric} {value:.4f}" for metric, value in
                                                              scores.items()) or "no labels: fidelity only"))
    else:
        print(f"{args.output}: not built: {result.error}")


def cmd_mark_failed(args) -> None:
    from slimlab import artifacts, stages

    stages.mark_failed(args.step, args.input, args.output, artifacts.last_error(args.log))
    print(f"{args.output}: recorded the failed step")


def cmd_bench(args) -> None:
    from slimlab import progress
    from slimlab.lab import bench, devices

    inventory = devices.load_inventory(args.inventory)
    if args.device not in inventory:
        raise SlimlabError(f"{args.inventory}: no device named {args.device!r}")
    device = inventory[args.device]
    settings = {**bench.measurement_settings(device, args.settings), "option_set": args.settings["option_set"]}
    with progress.bench(args.output, args.device, settings, args.threads):
        record = bench.run(device, args.artifact, args.threads, args.settings, args.output)
    if record.status == "ok":
        print(f"{args.output}: median {record.latency.median_ms:.4g} ms over {record.latency.n} runs")
    else:
        print(f"{args.output}: {record.status}: {record.error}")


def cmd_report_build(args) -> None:
    from slimlab import report

    table = report.write(report.read_deployables(args.deployables), args.outdir, args.reference or report.REFERENCE)
    print(f"{args.outdir}: {len(table)} rows")


def cmd_report_show(args) -> None:
    from slimlab.report import terminal

    columns = [name for text in args.columns or [] for name in text.split(",") if name]
    terminal.show(args.summary, {"device": args.device, "format": args.format, "recipe": args.recipe}, args.sort,
                  args.descending, columns)


def cmd_failures(args) -> int:
    """Exit 1, naming each one, if a recipe step failed (a conversion a format cannot take is not one). Name each
    model outside its quality budget too: not a failure, but never offered as fastest."""
    from slimlab import report

    failed = report.failed_steps(args.summary)
    for line in [*(f"budget missed: {line}" for line in report.budgets_missed(args.summary)), *failed]:
        print(line, file=sys.stderr)
    if failed:
        print(f"slimlab: error: {len(failed)} recipe step(s) failed; the report shows them", file=sys.stderr)
    return 1 if failed else 0


def cmd_nightly_run(args) -> int:
    """Exit 0 ok, 1 a regression, 2 anything else: a failure of the nightly's own (a lock, a missing workflow, a
    damaged state file, a bug) is one line and 2, never a traceback and never 1."""
    try:
        from slimlab import nightly, progress
        from slimlab.lab import verdict

        thresholds = verdict.Thresholds(min_effect=args.min_effect, confidence=args.confidence)
        extra = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
        snakemake = nightly.snakemake_command(Path.cwd(), extra)
        code = nightly.run(Path.cwd(), args.state, snakemake, args.rounds, thresholds, track=progress.series)
        runs = sorted((args.state / "runs").iterdir())
        print((runs[-1] / "verdict.md").read_text())
        return code
    except Exception as exc:
        return _nightly_failed(exc, args.state)


def _nightly_failed(exc: Exception, state: Path) -> int:
    """One line and exit 2 (1 is a regression); an unexpected error's traceback goes to ``state/error.log``."""
    line = str(exc) if isinstance(exc, SlimlabError) else f"the nightly failed unexpectedly: {one_line(exc)}"
    try:
        if not isinstance(exc, SlimlabError):
            with open(state / "error.log", "a") as log:
                traceback.print_exception(exc, file=log)
            line += f" (the traceback is in {state / 'error.log'})"
    except OSError:
        pass
    print(f"slimlab: error: {line}", file=sys.stderr)
    return 2


def cmd_nightly_accept(args) -> None:
    from slimlab import nightly, report

    plan = report.read_plan(Path("results/report/deployables.json"))
    accepted = nightly.Baseline(args.state).accept(plan, args.reason, args.run)
    print(f"{args.state}: accepted {len(accepted['artifacts'])} artifacts as the baseline ({accepted['by']}, "
          f"{accepted['accepted']}): {args.reason}")


def cmd_board(args) -> None:
    import logging

    from slimlab.lab.virtual import arm64, rootfs

    logging.basicConfig(format="slimlab board: %(message)s")
    logging.getLogger("slimlab").setLevel(logging.INFO)  # not paramiko's
    cache = args.cache or arm64.default_cache()
    if args.action == "build":
        print(rootfs.build(cache, args.mirror, args.force))
    elif args.action == "up":
        board = arm64.up(args.name, args.cpu, args.inventory, cache, args.evaluate)
        print(f"{board.name}: {board.address}, QEMU_CPU={board.cpu}; add it to lab.devices ({board.entry})")
    elif args.action == "down":
        for name in [board.name for board in arm64.boards(cache)] if args.all else args.names:
            arm64.down(name, cache)
    else:
        for board in arm64.status(cache):
            state = "running" if board["running"] else f"NOT running ({board['mounts']} mounts; board down clears it)"
            print(f"{board['name']}: {board['address']} QEMU_CPU={board['cpu']}, {state}; entry {board['entry']}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="slimlab", description="Compress models and measure them on devices.")
    sub = top.add_subparsers(dest="command", required=True)

    sub.add_parser("plugins", help="list loaded plugins as JSON").set_defaults(func=cmd_plugins)
    sub.add_parser("stages", help="list stages with their inputs, output and params").set_defaults(func=cmd_stages)
    sub.add_parser("formats", help="list formats with their files and runtime options").set_defaults(func=cmd_formats)
    sub.add_parser("datasets", help="list data sets with their params").set_defaults(func=cmd_datasets)
    sub.add_parser("tasks", help="list tasks with their metrics and params").set_defaults(func=cmd_tasks)

    p = sub.add_parser("init", help="start a folder for your own experiment: a commented config and inventory")
    p.add_argument("folder", type=Path)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("validate", help="check a config file, its recipes, inventory and devices")
    p.add_argument("config", nargs="?", default="config/config.yaml", type=Path)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run-step", help="run one recipe step and write its artifact")
    p.add_argument("--step", type=_json_arg, required=True, help='{"stage", "params", "dataset", ...} as JSON')
    p.add_argument("--input", type=Path, help="sidecar of the input artifact (none for a source stage)")
    p.add_argument("--output", type=Path, required=True, help="sidecar path of the new artifact")
    p.add_argument("--threads", type=_positive_int, default=1, help="CPU threads TensorFlow may use")
    p.set_defaults(func=cmd_run_step)

    p = sub.add_parser("mark-failed", help="record a failed step so the report shows it and the run goes on")
    p.add_argument("--step", type=_json_arg, required=True)
    p.add_argument("--input", type=Path, help="sidecar of the step's input (none for a source stage)")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True, help="the failed job's log; its last error line is kept")
    p.set_defaults(func=cmd_mark_failed)

    p = sub.add_parser("bench", help="benchmark one artifact on one device")
    p.add_argument("--inventory", type=Path, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--artifact", type=Path, required=True, help="sidecar of the artifact")
    p.add_argument("--threads", type=_positive_int, required=True)
    p.add_argument("--settings", type=_json_arg, required=True,
                   help="the config's bench block as JSON, with one option set's name and options")
    p.add_argument("--output", type=Path, required=True)
    p.set_defaults(func=cmd_bench)

    report = sub.add_parser("report", help="the summary tables and page: build them, or show them in the terminal")
    report_actions = report.add_subparsers(dest="action", required=True)
    p = report_actions.add_parser("build", help="write summary.{parquet,csv,html}, fastest.csv and "
                                  "accuracy_vs_latency.png from sidecars and records")
    p.add_argument("--deployables", type=Path, required=True,
                   help='the workflow\'s deployables.json: {"deployables": [{"recipe", "format", "sidecar", '
                   '"records"}]}')
    p.add_argument("--outdir", type=Path, required=True)
    p.add_argument("--reference", help="the recipe speed-ups and MAC ratios are measured against (default: baseline)")
    p.set_defaults(func=cmd_report_build)
    p = report_actions.add_parser("show", help="print the summary as a table, filtered and sorted")
    p.add_argument("--summary", type=Path, default=Path("results/report/summary.parquet"),
                   help="summary.parquet or summary.csv (default: results/report/summary.parquet)")
    for key in ("device", "format", "recipe"):
        p.add_argument(f"--{key}", action="append", help=f"only this {key} (repeat for more)")
    p.add_argument("--sort", help="sort by this column (default: recipe, format, device, option set, threads)")
    p.add_argument("--descending", action="store_true", help="sort from the largest")
    p.add_argument("--columns", nargs="+", help="the columns to show, by name (space- or comma-separated)")
    p.set_defaults(func=cmd_report_show)

    nightly = sub.add_parser("nightly", help="the nightly device regression").add_subparsers(dest="action", required=True)
    p = nightly.add_parser("run", help="build, measure, compare with the baseline; exit 0 ok, 1 regression, 2 infra")
    p.add_argument("--state", type=Path, default=Path("results/nightly"), help="baseline, history and verdicts")
    p.add_argument("--rounds", type=_positive_int, default=10, help="alternating baseline/candidate rounds")
    p.add_argument("--min-effect", type=float, default=0.03, help="the smallest change worth an alert (fraction)")
    p.add_argument("--confidence", type=float, default=0.99, help="of the bootstrap interval")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="after --: how to run snakemake (default: "
                   "--workflow-profile profiles/nightly, the folder's own else slimlab's; a folder without a "
                   "Snakefile runs slimlab's workflow in it)")
    p.set_defaults(func=cmd_nightly_run)
    p = nightly.add_parser("accept", help="make the current artifacts the baseline; logs who, when and why")
    p.add_argument("--reason", required=True, help="why this is the new baseline (kept in the audit log)")
    p.add_argument("--state", type=Path, default=Path("results/nightly"))
    p.add_argument("--run", help="the nightly run this baseline comes from, for the audit log")
    p.set_defaults(func=cmd_nightly_accept)

    board = sub.add_parser("board", help="an emulated arm64 board on this host (root; README: Devices)")
    board_actions = board.add_subparsers(dest="action", required=True)
    cache = argparse.ArgumentParser(add_help=False)
    cache.add_argument("--cache", type=Path, help="built trees and running boards "
                       "(default: $SLIMLAB_BOARD_CACHE, else ~/.cache/slimlab/boards)")
    p = board_actions.add_parser("build", parents=[cache], help="build the arm64 tree with the payload's runtimes, "
                                 "or reuse the cached one")
    p.add_argument("--mirror", help="Debian mirror (default: the one apt's sources name)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=cmd_board)
    p = board_actions.add_parser("up", parents=[cache], help="start a board and write its inventory entry")
    p.add_argument("name")
    p.add_argument("--cpu", required=True, help="the core qemu emulates: cortex-a72 (a Pi 4), cortex-a76 (a Pi 5), "
                   "max,sme=off (a modern core with fp16, dotprod, i8mm, bf16)")
    p.add_argument("--inventory", type=Path, default=Path("devices"), help="where the entry <name>.yaml goes "
                   "(default: devices, the default config's inventory folder)")
    p.add_argument("--evaluate", type=int, default=200, help="test samples the board runs per record, against "
                   "the host's logits (default 200; 0 = off)")
    p.set_defaults(func=cmd_board)
    p = board_actions.add_parser("down", parents=[cache], help="stop boards, unmount and delete them and their entries")
    names = p.add_mutually_exclusive_group(required=True)
    names.add_argument("names", nargs="*", metavar="name", default=[])
    names.add_argument("--all", action="store_true", help="every board that is up")
    p.set_defaults(func=cmd_board)
    board_actions.add_parser("status", parents=[cache], help="the boards that are up").set_defaults(func=cmd_board)

    p = sub.add_parser("failures", help="exit 1 if a recipe step failed, naming each")
    p.add_argument("--summary", type=Path, required=True, help="results/report/summary.parquet")
    p.set_defaults(func=cmd_failures)
    return top


def preload() -> None:
    """What a zygote imports once for all its children: the commands and the built-in plugins. A module that
    fails to import is left to the job that needs it, which reports the error in its own log."""
    try:
        import rich.progress  # noqa: F401  (bench jobs' progress line)

        from slimlab import progress, registry, stages  # noqa: F401
        from slimlab.lab import bench  # noqa: F401

        for name in registry.builtin_plugins():
            importlib.import_module(name)
    except Exception:  # any failure: the job that imports the module reports it in its own log
        pass


def one_line(exc: BaseException) -> str:
    """``TypeError: f() got an unexpected keyword argument 'x'``: an unexpected error as its own first line."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.command in zygote.SERVED:
        if args.command == "run-step":
            # TensorFlow reads these when it starts: parallel jobs do not oversubscribe the cores.
            os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(args.threads))
            os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(min(args.threads, 2)))
        job.mark_started()
        if zygote.enabled():
            code = zygote.run(argv, zygote.kind_for(args.command, getattr(args, "step", None),
                                                    getattr(args, "input", None)), entry=__spec__.name)
            if code is not None:  # None: no zygote served, so run here
                return code
    try:
        return args.func(args) or 0
    except SlimlabError as exc:
        print(f"slimlab: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a plugin's bug: the traceback for its author, then the cause as the job's error line
        traceback.print_exc()
        print(f"slimlab: error: {one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
