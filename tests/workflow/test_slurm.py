"""profiles/slurm on a real Slurm cluster: the stage jobs go through sbatch, the lab's jobs stay on this host.

The tiny DAG (digits, two recipes, tflite, this host as the device) runs twice: with
profiles/slurm against the cluster, and locally with profiles/ci. Slurm's own records must show
the train, compress and convert jobs; the bench and report jobs must have run here; both reports
must agree. Needs a cluster whose partition is the profile's: .ci/slurm-up.sh starts a
single-node one on localhost (.ci/run does, in CI). Without it the tests skip and say why;
under SLIMLAB_REQUIRE_LAB=1 they fail.
"""

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slimlab.records import BenchRecord, load
from tests.support import REPO, lab_unavailable

PROFILE = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
PARTITION = PROFILE["default-resources"]["slurm_partition"]
STAGE_RULES = ("train", "compress", "convert")
LOCAL_RULES = ("bench_device_localhost", "deployables", "report", "steps_succeeded")
# Both runs get the same threads, so they train the same model; train's 2 becomes --cpus-per-task=2.
THREADS = {"train": 2, "compress": 1, "convert": 1}
CONFIG = {
    "dataset": {"name": "digits"},
    "recipes": {"baseline": ["train"], "int8": ["train", "quantize.int8"]},
    "formats": ["tflite"],
    "lab": {"inventory": "devices/lab.yaml", "devices": ["localhost"]},
}
# What makes a report row: both runs must have the same set of them.
ROW = ["recipe", "format", "device", "option_set", "threads", "status"]


def command(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def require_cluster() -> None:
    """Skip (or fail, in CI) unless a Slurm cluster that can run profiles/slurm's jobs answers here."""
    for tool in ("sinfo", "sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            lab_unavailable(f"no Slurm here: `{tool}` is not on PATH (.ci/slurm-up.sh installs and starts "
                            "a single-node cluster)")
    ping = command("scontrol", "ping")
    if "is UP" not in ping.stdout:
        said = (ping.stdout + ping.stderr).strip().splitlines() or ["nothing"]
        lab_unavailable(f"slurmctld is not up (`scontrol ping`: {said[0]}); start it with .ci/slurm-up.sh")
    nodes = command("sinfo", "-h", "-p", PARTITION, "-o", "%t %m").stdout.split("\n")
    up = [int(memory.rstrip("+")) for state, memory in (n.split() for n in nodes if n.strip())
          if state in ("idle", "mix", "alloc")]
    if not up:
        lab_unavailable(f"partition {PARTITION!r}, which profiles/slurm asks for, has no node up "
                        f"(sinfo: {nodes}); .ci/slurm-up.sh makes one")
    need_mb = max([PROFILE["default-resources"]["mem_mb"],
                   *(r.get("mem_mb", 0) for r in PROFILE["set-resources"].values())])
    if max(up) < need_mb:
        lab_unavailable(f"the nodes of partition {PARTITION!r} have {max(up)} MB; profiles/slurm asks for {need_mb}")
    config = command("scontrol", "show", "config").stdout
    min_job_age = re.search(r"^MinJobAge\s*=\s*(\d+)", config, re.M)
    need_s = 3 * PROFILE["slurm-init-seconds-before-status-checks"]
    if not min_job_age or int(min_job_age[1]) < need_s:
        lab_unavailable(f"Slurm's MinJobAge is {min_job_age and min_job_age[1]}: polling with squeue needs at least "
                        f"{need_s} s (.ci/slurm-up.sh sets 600)")


def wildcards_lost_on_the_way() -> str | None:
    """Why a cluster job would be handed other wildcards than its own, or None.

    A cluster job is the same snakemake again, told which job to run by `--target-jobs
    rule:name=value,...`; the wildcards here are slimlab's own folder names for the tiny DAG.
    """
    from snakemake.target_jobs import parse_target_jobs_cli_args
    from snakemake_interface_executor_plugins.utils import TargetSpec, encode_target_jobs_cli_args

    from slimlab.recipes import dataset_segment, segment

    wildcards = {
        "dataset": dataset_segment({"name": "digits", "seed": 42, "val_fraction": 0.1, "test_fraction": 0.2}),
        "step": segment("train", {"epochs": 1, "batch_size": 128}),
    }
    [back] = parse_target_jobs_cli_args(encode_target_jobs_cli_args([TargetSpec("train", wildcards)]))
    if back.wildcards_dict == wildcards:
        return None
    return (f"a cluster job is handed the wildcards {back.wildcards_dict} instead of {wildcards}: snakemake's "
            "--target-jobs decoder (snakemake/target_jobs.py) splits at every comma although the executor "
            "interface's encoder quotes values that hold one (snakemake issue #2366); slimlab's folder names "
            "hold commas, so no stage job can run on a cluster")


def test_cluster_jobs_are_handed_their_own_wildcards():
    """Fast, and needs no cluster: the condition every cluster run of slimlab rests on."""
    lost = wildcards_lost_on_the_way()
    assert lost is None, lost


def checkout(root: Path) -> Path:
    """A checkout-like folder: the workflow linked in, the tiny config written."""
    root.mkdir()
    for name in ("Snakefile", "workflow", "plugins", "profiles", "devices"):
        (root / name).symlink_to(REPO / name)
    (root / "config").mkdir()
    (root / "config/config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return root


def snakemake(root: Path, *args: str, timeout: float = 420) -> tuple[str, float]:
    """Run snakemake in ``root``; its log (stdout and stderr) and its wall time in seconds."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    argv = [sys.executable, "-m", "snakemake", *args,
            "--set-threads", *(f"{rule}={n}" for rule, n in THREADS.items())]
    start = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        log = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
        if run := re.search(r"SLURM run ID: (\S+)", log):
            command("scancel", "--name", run[1])  # the jobs of the killed run
        pytest.fail(f"snakemake {' '.join(args)} ran past {timeout} s:\n{log[-4000:]}")
    wall = time.monotonic() - start
    assert done.returncode == 0, f"snakemake {' '.join(args)} failed:\n{done.stdout[-6000:]}"
    return done.stdout, wall


def job_spans(log: str) -> dict[int, tuple[str, bool, float, float]]:
    """Every job of a run from snakemake's log: {jobid: (rule, local, start, end)}, to the second.

    For a cluster job, start is its submission and end when snakemake saw it finished."""
    stamp, header, jobs = None, None, {}
    for line in log.splitlines():
        if m := re.fullmatch(r"\[(\w{3} \w{3}\s+\d+ [\d:]{8} \d{4})\]", line.strip()):
            stamp = datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y").timestamp()
        elif m := re.fullmatch(r"(local)?rule (\w+):", line):
            header = (m[2], bool(m[1]), stamp)
        elif header and (m := re.fullmatch(r"\s+jobid: (\d+)", line)):
            jobs[int(m[1])] = [*header, None]
            header = None
        elif m := re.fullmatch(r"Finished jobid: (\d+) \(Rule: \w+\)", line):
            jobs[int(m[1])][3] = stamp
    return {jobid: tuple(job) for jobid, job in jobs.items()}


def slurm_job(jobid: str) -> dict[str, str]:
    """`scontrol show job` as {key: value}: Slurm's own record, kept for MinJobAge after the job ends."""
    shown = command("scontrol", "show", "job", "-o", jobid)
    assert shown.returncode == 0, f"Slurm has no record of job {jobid}: {shown.stderr.strip()}"
    return dict(token.split("=", 1) for token in shown.stdout.split() if "=" in token)


def time_limit(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def profile_resource(rule: str, key: str):
    return PROFILE["set-resources"].get(rule, {}).get(key, PROFILE["default-resources"][key])


@dataclass
class Run:
    root: Path
    log: str
    wall: float

    def summary(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "results/report/summary.csv")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """The tiny DAG on the cluster (profiles/slurm over profiles/ci's budgets), then locally (profiles/ci)."""
    require_cluster()
    if lost := wildcards_lost_on_the_way():
        pytest.fail(lost)
    base = tmp_path_factory.mktemp("slurm")
    slurm = checkout(base / "slurm")
    log, wall = snakemake(slurm, "--workflow-profile", "profiles/slurm", "--configfile", "profiles/ci/tiny.yaml")
    done = {"slurm": Run(slurm, log, wall)}
    local = checkout(base / "local")
    log, wall = snakemake(local, "--workflow-profile", "profiles/ci")
    done["local"] = Run(local, log, wall)
    return done


@pytest.mark.slow
@pytest.mark.lab
def test_stage_jobs_went_through_sbatch(runs):
    run = runs["slurm"]
    run_id = re.search(r"SLURM run ID: (\S+)", run.log)[1]
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", run.log)
    jobs = {jobid: slurm_job(jobid) for jobid in ids}
    rules = {jobid: re.match(r"rule_(\w+?)(?:_wildcards_|$)", job["Comment"])[1] for jobid, job in jobs.items()}
    # One train (shared by both recipes), quantize.int8, and baseline's convert.tflite.
    assert sorted(rules.values()) == sorted(STAGE_RULES)
    ctld_log = re.search(r"^SlurmctldLogFile\s*=\s*(\S+)", command("scontrol", "show", "config").stdout, re.M)
    ctld_log = Path(ctld_log[1]).read_text(errors="replace") if ctld_log and os.access(ctld_log[1], os.R_OK) else None
    for jobid, job in jobs.items():
        rule = rules[jobid]
        assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0"), (rule, job)
        assert job["JobName"] == run_id
        assert Path(job["WorkDir"]).resolve() == run.root.resolve()
        # The profile's partition, runtime and memory for this kind of rule, and its threads as CPUs.
        assert job["Partition"] == PARTITION
        assert job["TimeLimit"] == time_limit(profile_resource(rule, "runtime"))
        assert job["MinMemoryNode"] == f"{profile_resource(rule, 'mem_mb')}M"
        assert int(job["CPUs/Task"]) == min(THREADS[rule], os.cpu_count())
        if ctld_log is not None:
            assert f"_slurm_rpc_submit_batch_job: JobId={jobid} " in ctld_log
    # Slurm's list of this run's jobs holds these and nothing else: no bench or report job.
    listed = command("squeue", "--states=all", "-h", "--name", run_id, "-o", "%i %k").stdout.split("\n")
    assert sorted(line.split()[0] for line in listed if line.strip()) == sorted(ids)
    # And snakemake ran exactly the stage rules as cluster jobs.
    spans = job_spans(run.log).values()
    assert sorted(rule for rule, local, *_ in spans if not local) == sorted(STAGE_RULES)


@pytest.mark.slow
@pytest.mark.lab
def test_bench_and_report_jobs_ran_on_the_lab_host(runs):
    run = runs["slurm"]
    spans = job_spans(run.log).values()
    local_rules = [rule for rule, local, *_ in spans if local]
    assert set(LOCAL_RULES) <= set(local_rules)
    paths = [p for p in (run.root / "results/bench/localhost").rglob("threads-*.json") if not p.name.endswith(".failed.json")]
    assert paths and len(paths) == local_rules.count("bench_device_localhost")
    # On a single-node cluster the node is this host too: the proof that they were not submitted
    # is above and in Slurm's list of the run's jobs (test_stage_jobs_went_through_sbatch).
    for path in paths:
        assert load(BenchRecord, path, "bench record").host == platform.node()


@pytest.mark.slow
@pytest.mark.lab
def test_report_matches_a_local_run(runs):
    slurm, local = runs["slurm"].summary(), runs["local"].summary()
    assert list(slurm.columns) == list(local.columns)
    assert len(slurm) == len(local)
    assert set(slurm[ROW].itertuples(index=False)) == set(local[ROW].itertuples(index=False))
    assert (slurm["status"] == "ok").all()
    # The same models: the same steps and accuracies, measured in each format's runtime.
    models = ["recipe", "format", "steps", "accuracy", "accuracy_val", "size_bytes"]

    def by_model(table: pd.DataFrame) -> pd.DataFrame:
        return table[models].drop_duplicates().sort_values(["recipe", "format"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(by_model(slurm), by_model(local))


@pytest.mark.slow
@pytest.mark.lab
def test_wall_times_local_vs_slurm(runs, capsys):
    slurm, local = runs["slurm"], runs["local"]
    on_slurm = {rule: (start, end) for rule, is_local, start, end in job_spans(slurm.log).values() if not is_local}
    here = {rule: (start, end) for rule, _, start, end in job_spans(local.log).values() if rule in STAGE_RULES}
    assert set(on_slurm) == set(here) == set(STAGE_RULES)
    lines = [f"tiny DAG wall time: local (profiles/ci) {local.wall:.1f} s, Slurm (profiles/slurm) {slurm.wall:.1f} s; "
             f"{(slurm.wall - local.wall) / len(STAGE_RULES):+.1f} s per Slurm job"]
    for rule in STAGE_RULES:
        job = slurm_job(re.search(rf"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: \S+/rule_{rule}/",
                                  slurm.log)[2])
        queued = (datetime.fromisoformat(job["StartTime"]) - datetime.fromisoformat(job["SubmitTime"])).seconds
        ran = (datetime.fromisoformat(job["EndTime"]) - datetime.fromisoformat(job["StartTime"])).seconds
        seen = on_slurm[rule][1] - on_slurm[rule][0]
        alone = here[rule][1] - here[rule][0]
        lines.append(f"  {rule:8} local {alone:4.0f} s | Slurm: submitted to seen finished {seen:4.0f} s "
                     f"(queued {queued} s, ran {ran} s), overhead {seen - alone:+.0f} s")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
