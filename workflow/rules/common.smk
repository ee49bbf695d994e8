# Config validation, the recipe plan and path helpers shared by every rule file.
import json
import os
import re
import sys
from pathlib import Path

from slimlab import artifacts, option_sets, registry, workflow as slimlab_workflow
from slimlab.errors import SlimlabError

try:
    slimlab_workflow.check_files(workflow.configfiles)
    EXPERIMENT = slimlab_workflow.check(config)
except SlimlabError as exc:
    # One line, no traceback: the message names the bad key or file.
    sys.exit(f"slimlab: error: {exc}")

PLAN = EXPERIMENT.plan
DEVICES = EXPERIMENT.devices


def sidecar(artifact):
    return f"results/artifacts/{artifact}/artifact.json"


# A failed step's sidecar is a valid output, so a plain rerun would not retry it. One that failed (or was
# unsupported) in another environment (slimlab.identity.environment: the Python, the installed packages, the
# plugins) is deleted here with the failed sidecars of the steps skipped below it, and so is the report's
# summary.parquet: Snakemake rebuilds a missing file only for a consumer that reruns, and the report is the
# consumer of them all. A dry run only says so. Only in the snakemake process that plans the run (cluster
# jobs load this file too), and only where jobs run in this process's own environment: with conda or
# apptainer they run in another, which Snakemake's software-env trigger watches.
_DEPLOYMENT = {getattr(m, "name", str(m)).upper() for m in workflow.deployment_settings.deployment_method}
if workflow.is_main_process and not _DEPLOYMENT & {"CONDA", "APPTAINER"}:
    _sidecars = [sidecar(artifact) for artifact in PLAN.steps]
    _retried = artifacts.stale_failures(_sidecars)
    _dry = workflow.output_settings is not None and workflow.output_settings.dryrun
    if _retried and not _dry:
        artifacts.forget(_retried, _sidecars)
        Path("results/report/summary.parquet").unlink(missing_ok=True)
    _verb = "would retry (a dry run changes nothing)" if _dry else "retrying"
    for _path, _error in _retried[:5]:
        print(f"slimlab: {_verb} {_path.parent} (failed in another environment: {_error})", file=sys.stderr)
    if len(_retried) > 5:
        print(f"slimlab: {_verb} {len(_retried) - 5} more steps that failed in another environment", file=sys.stderr)

_SOURCE_STAGES = "|".join(re.escape(n) for n, s in registry.stages().items() if s.is_source)
SOURCE_STEP = rf"(?:{_SOURCE_STAGES})(?:@[^/]+)?"
CONVERT_STEP = r"convert\.[^/@]+(?:@[^/]+)?"
COMPRESS_STEP = rf"(?!convert\.)(?!(?:{_SOURCE_STAGES})(?:@|$))[^/]+"
OPTION_SET = "|".join(re.escape(name) for name in config["bench"]["option_sets"])


def step_json(wildcards):
    """The step payload for the artifact this job builds, as JSON for the CLI."""
    artifact = os.path.join(*(v for k, v in wildcards.items() if k in ("dataset", "parent", "step")))
    try:
        return json.dumps(PLAN.step(artifact), sort_keys=True)
    except SlimlabError as exc:
        raise WorkflowError(str(exc))


def bench_records(device, artifact_format, artifact):
    """Records for one deployable on one device, if the device has the runtime: one per thread
    count and option set that applies to the format."""
    if artifact_format not in device.runtimes:
        return []
    threads = device.measurement.get("threads", config["bench"]["threads"])
    return [
        f"results/bench/{device.name}/{artifact}/{option_set}/threads-{n}.json"
        for option_set in option_sets.sets_for(config["bench"], artifact_format)
        for n in threads
    ]


def bench_settings(wildcards):
    """The `bench` block for one option set, as JSON for `slimlab bench`: its name and its merged options."""
    settings = {key: value for key, value in config["bench"].items() if key != "option_sets"}
    options = option_sets.merged(config["bench"], wildcards.options)
    return json.dumps({**settings, "option_set": wildcards.options, "options": options}, sort_keys=True)


def deployables():
    """What the report and the nightly read: every deployable's sidecar and records, or why it has none;
    and the inventory and bench settings the records were measured with."""
    listed = [
        {"recipe": d.recipe, "format": d.format, "unsupported": d.unsupported}
        if d.artifact is None
        else {
            "recipe": d.recipe,
            "format": d.format,
            "sidecar": sidecar(d.artifact),
            "records": [r for device in DEVICES.values() for r in bench_records(device, d.format, d.artifact)],
            **({"budget": d.budget, "budget_source": sidecar(d.source)} if d.budget else {}),
        }
        for d in PLAN.deployables
    ]
    return {"inventory": config["lab"]["inventory"], "bench": config["bench"], "deployables": listed}
