"""``slimlab``: the commands the workflow runs, and a few for people.

    slimlab plugins                      loaded plugins as JSON
    slimlab stages                       registered stages and their params
    slimlab validate CONFIG              check a config and its recipes
    slimlab run-step ...                 one recipe step (used by the workflow)
    slimlab mark-failed ...              record a failed conversion (used by the workflow)
    slimlab bench ...                    one benchmark record (used by the workflow)
    slimlab report ...                   the summary tables and page (used by the workflow)
"""

import argparse
import json
import sys
from pathlib import Path

from slimlab.errors import SlimlabError


def _json_arg(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def cmd_plugins(args) -> None:
    from slimlab import registry

    print(json.dumps(registry.describe_plugins(), indent=2))


def cmd_stages(args) -> None:
    from slimlab import registry

    listing = {
        name: {
            "doc": stage.doc,
            "inputs": list(stage.inputs),
            "output": stage.output,
            "params": stage.params.model_json_schema().get("properties", {}),
        }
        for name, stage in sorted(registry.stages().items())
    }
    print(json.dumps(listing, indent=2))


def cmd_validate(args) -> None:
    from slimlab import config, recipes

    cfg = config.load_yaml(args.config, "config") or {}
    config.validate(cfg, "config.schema.yaml", args.config)
    plan = recipes.build_plan(cfg)
    print(f"{args.config}: ok, {len(plan.recipes)} recipes, {len(plan.steps)} artifacts, {len(plan.deployables)} deployables")


def cmd_run_step(args) -> None:
    import tensorflow as tf

    from slimlab.stages import run_step

    # Honour the job's thread budget so parallel jobs do not oversubscribe the cores.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))
    artifact = run_step(args.step, args.input, args.output)
    print(f"{artifact.sidecar}: {artifact.kind}, test accuracy {artifact.meta['accuracy']['test']:.4f}")


def cmd_mark_failed(args) -> None:
    from slimlab import artifacts

    artifacts.write_failed(args.output, args.step, args.input, artifacts.last_error(args.log))
    print(f"{args.output}: recorded the failed conversion")


def cmd_bench(args) -> None:
    from slimlab import config
    from slimlab.lab import bench

    devices = config.load_inventory(args.inventory)
    if args.device not in devices:
        raise SlimlabError(f"{args.inventory}: no device named {args.device!r}")
    record = bench.run(devices[args.device], args.artifact, args.threads, args.settings, args.output)
    if record["status"] == "ok":
        print(f"{args.output}: median {record['latency']['median_ms']:.3f} ms over {record['latency']['n']} runs")
    else:
        print(f"{args.output}: {record['status']}: {record['error']}")


def cmd_report(args) -> None:
    from slimlab import report

    table = report.write(args.deployables, args.outdir)
    print(f"{args.outdir}: {len(table)} rows")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="slimlab", description="Compress models and measure them on devices.")
    sub = top.add_subparsers(dest="command", required=True)

    sub.add_parser("plugins", help="list loaded plugins as JSON").set_defaults(func=cmd_plugins)
    sub.add_parser("stages", help="list stages with their inputs, output and params").set_defaults(func=cmd_stages)

    p = sub.add_parser("validate", help="check a config file and its recipes")
    p.add_argument("config", nargs="?", default="config/config.yaml")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run-step", help="run one recipe step and write its artifact")
    p.add_argument("--step", type=_json_arg, required=True, help='{"stage", "params", "dataset"} as JSON')
    p.add_argument("--input", type=Path, help="sidecar of the input artifact (none for a source stage)")
    p.add_argument("--output", type=Path, required=True, help="sidecar path of the new artifact")
    p.add_argument("--threads", type=int, default=1, help="CPU threads TensorFlow may use")
    p.set_defaults(func=cmd_run_step)

    p = sub.add_parser("mark-failed", help="record a failed conversion so the report shows it and the run goes on")
    p.add_argument("--step", type=_json_arg, required=True)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True, help="the failed job's log; its last error line is kept")
    p.set_defaults(func=cmd_mark_failed)

    p = sub.add_parser("bench", help="benchmark one artifact on one device")
    p.add_argument("--inventory", type=Path, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--artifact", type=Path, required=True, help="sidecar of the artifact")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--settings", type=_json_arg, required=True, help="the config's bench block as JSON, its options those of one option set")
    p.add_argument("--output", type=Path, required=True)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="write summary.{parquet,csv,html} and fastest.csv from sidecars and records")
    p.add_argument("--deployables", type=_json_arg, required=True,
                   help='[{"recipe", "format", "sidecar", "records": [...]}] as JSON')
    p.add_argument("--outdir", type=Path, required=True)
    p.set_defaults(func=cmd_report)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except SlimlabError as exc:
        print(f"slimlab: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
