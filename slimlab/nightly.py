"""The nightly device regression: build, measure, compare with the accepted baseline, and say so.

``slimlab nightly run`` does, in one working directory:

1. takes the nightly lock (a second nightly exits 2, naming the process that holds it),
   and clears a Snakemake lock that a killed run left behind, once it has made sure no
   Snakemake process works in this directory (it logs that it did);
2. runs the workflow (the folder's Snakefile, else slimlab's own with ``--directory``: see
   :func:`snakemake_command`), which builds the recipes and records every benchmark;
3. for every series (recipe, format, device, option set, threads) with an accepted
   baseline, times the baseline artifact and the candidate side by side on the device, in
   alternating rounds, and decides with :mod:`slimlab.lab.verdict` (an ``unsure`` series,
   e.g. one that other work shared the device with, is measured once more before it is
   reported); the task's metrics and size are compared exactly;
4. appends every series to the history store (:mod:`slimlab.lab.history`);
5. writes ``verdict.md`` and ``verdict.json``; every number links to its record.

Exit codes: 0 ok, 1 a regression, 2 an infrastructure failure (a series that should
have a record and has none, a device that failed; any failure of the nightly's own). A series
that is no device figure (``emulated``, ``software_gpu``), or whose artifact is a known limit
(``unsupported``), is listed under that status, never compared, and leaves the exit code alone.
``slimlab nightly accept --reason ...`` makes the current artifacts the baseline (each copied whole,
named by :func:`artifact_digest`) and appends who, when and why to ``audit.log``.

This orchestration sits on top, beside the CLI: it runs the workflow and reads the
report. The lab-level parts it uses (statistics, verdict, history) are in :mod:`slimlab.lab`.
"""

import datetime as dt
import fcntl
import getpass
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

import slimlab
from slimlab import registry, report, tasks
from slimlab.artifacts import SIDECAR, Artifact, read_sidecar
from slimlab.atomic import write_bytes, write_json
from slimlab.errors import ArtifactError, DeviceError, SlimlabError
from slimlab.lab import energy, history, verdict
from slimlab.lab.context import throttled
from slimlab.lab.devices import load_inventory
from slimlab.lab.lock import device_lock, lock_dir
from slimlab.nightly_page import SERIES_KEYS, markdown, series_key
from slimlab.records import BenchRecord, load

log = logging.getLogger(__name__)
EXIT_OK, EXIT_REGRESSION, EXIT_INFRA = 0, 1, 2
PROFILE, SNAKEFILES = Path("profiles/nightly"), ("Snakefile", "snakefile", "workflow/Snakefile", "workflow/snakefile")
INDEX_VERSION = 2  # of baseline.json: 2, copies named by artifact_digest; none, by the main file's sha256 only


class Busy(SlimlabError):
    """Another run holds this directory."""


@contextmanager
def nightly_lock(state: Path):
    """Hold ``state/nightly.lock``; a second nightly in the same place fails at once, naming the first."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "nightly.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise Busy(f"another nightly is running here: {lock.read().strip() or 'unknown process'}") from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {platform.node()} since {now()}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def snakemake_processes(workdir: Path) -> list[int]:
    """Live processes running Snakemake with ``workdir`` as their working directory (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue  # gone, or not ours to inspect
        if b"snakemake" in cmdline and cwd == workdir.resolve():
            found.append(int(entry.name))
    return found


def recover_snakemake_lock(workdir: Path, snakemake: list[str]) -> bool:
    """Clear a lock a killed Snakemake left behind (with the nightly's own ``snakemake`` arguments); refuse (Busy)
    while a Snakemake still runs here."""
    locks = workdir / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return False
    running = snakemake_processes(workdir)
    if running:
        raise Busy(f"{workdir} is locked by a running Snakemake (pid {', '.join(map(str, running))})")
    done = subprocess.run([*snakemake, "--unlock"], cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        said = (done.stderr + done.stdout).strip().splitlines() or ["no message"]
        raise SlimlabError(f"snakemake --unlock failed (exit {done.returncode}) on the lock a killed run left in "
                           f"{locks}: {said[-1].strip().removeprefix('slimlab: error: ')}")
    log.warning("recovered: removed the Snakemake lock a killed run left in %s (no Snakemake process runs there)",
                locks)
    return True


def snakemake_command(workdir: Path, extra: list[str]) -> list[str]:
    """The folder's Snakefile, else slimlab's own with ``--directory workdir`` (a ``slimlab init`` folder); unless
    ``extra`` says how to run snakemake, the folder's ``profiles/nightly``, else slimlab's. slimlab's own are beside
    its package, in the checkout ``make setup`` installed it from (editable); the unlock gets the same arguments."""
    own = Path(slimlab.__file__).resolve().parent.parent
    own_snakefile = not {"-s", "--snakefile"} & {arg.split("=")[0] for arg in extra} \
        and not any((workdir / name).is_file() for name in SNAKEFILES)
    own_profile = not extra and not (workdir / PROFILE).is_dir()
    if (own_snakefile or own_profile) and not ((own / "Snakefile").is_file() and (own / PROFILE).is_dir()):
        raise SlimlabError(f"no Snakefile or {PROFILE} here, and slimlab's own are not beside its package (no {own}/"
                           f"Snakefile and {own}/{PROFILE}): install slimlab editable from its checkout (make setup)")
    workflow = ["--snakefile", str(own / "Snakefile"), "--directory", str(workdir)] if own_snakefile else []
    return [sys.executable, "-m", "snakemake", *workflow,
            *(extra or ["--workflow-profile", str(own / PROFILE if own_profile else PROFILE)])]


def expected_series(plan: dict) -> list[dict]:
    """Every (deployable, record) the workflow should have measured."""
    return [{"recipe": item["recipe"], "format": item["format"], "sidecar": item["sidecar"], "record": path}
            for item in plan["deployables"] for path in item.get("records", [])]


def artifact_digest(artifact: Artifact) -> str:
    """The whole artifact: every file's sha256 as its sidecar lists them, and the sidecar's bytes (accuracy, size,
    lineage). Two artifacts that share a file (ncnn models of one architecture share their .param) never share it."""
    files = {name: info.sha256 for name, info in artifact.info.files.items()}
    sidecar = hashlib.sha256(artifact.sidecar.read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps({"files": files, "sidecar": sidecar}, sort_keys=True).encode()).hexdigest()


def accepted_artifact(sidecar: str | Path, digest: str) -> Artifact:
    """An accepted copy, checked against the digest it was accepted with: an edit or damage since is an error."""
    artifact = Artifact.load(sidecar)
    if artifact_digest(artifact) != digest:
        raise ArtifactError(f"{sidecar}: changed since it was accepted; accept the baseline again")
    return artifact


class Baseline:
    """The accepted artifacts, each copied whole to ``state/baseline/<artifact_digest>/``, the index, the audit."""

    def __init__(self, state: Path):
        self.root = state / "baseline"
        self.index = state / "baseline.json"
        self.audit = state / "audit.log"

    def load(self) -> dict:
        if not self.index.is_file():
            return {}
        try:
            accepted = json.loads(self.index.read_text())
        except (OSError, ValueError):  # unreadable, or not JSON
            accepted = None
        if not isinstance(accepted, dict) or accepted.get("version") != INDEX_VERSION:
            raise ArtifactError(
                f"{self.index}: not a baseline this slimlab reads (damaged, or from an older slimlab, which named each "
                "baseline by its main file only, so that ncnn models of one architecture shared one); accept the "
                "baseline again: slimlab nightly accept --reason ...")
        return accepted

    def accept(self, plan: dict, reason: str, run_id: str | None) -> dict:
        artifacts = {}
        for item in plan["deployables"]:
            if "sidecar" not in item or read_sidecar(item["sidecar"]).status != "ok":
                continue
            source = Artifact.load(item["sidecar"])
            digest = artifact_digest(source)
            target, part = self.root / digest, self.root / f"{digest}.part"
            try:
                accepted_artifact(target / SIDECAR, digest)  # a copy made before, still whole
            except ArtifactError:
                for stale in (target, part):  # a damaged copy, or one a killed accept left half done
                    shutil.rmtree(stale, ignore_errors=True)
                shutil.copytree(source.dir, part)
                part.rename(target)
            artifacts[f"{item['recipe']}|{item['format']}"] = {"sidecar": str(target / SIDECAR), "digest": digest,
                                                               "sha256": source.sha256}
        who = f"{getpass.getuser()}@{platform.node()}"
        accepted = {"version": INDEX_VERSION, "accepted": now(), "by": who, "reason": reason, "run": run_id,
                    "artifacts": artifacts}
        write_json(self.index, accepted)
        with open(self.audit, "a") as audit:
            audit.write(json.dumps({"when": accepted["accepted"], "who": who, "why": reason, "run": run_id,
                                    "artifacts": len(artifacts)}) + "\n")
        return accepted


class Measurer:
    """Side-by-side timings of baseline and candidate artifacts on the devices of one inventory."""

    def __init__(self, inventory: dict, rounds: int, thresholds: verdict.Thresholds, lock_wait_s: float = 3600):
        self.inventory, self.rounds, self.thresholds, self.lock_wait_s = inventory, rounds, thresholds, lock_wait_s

    def _rounds(self, candidate: Artifact, baseline: Artifact, record: BenchRecord, rounds: int) -> dict:
        device = self.inventory[record.device]
        settings = {**record.settings, "options": {record.format: record.options.requested}}
        transport = registry.transports()[device.transport](device)
        try:
            with device_lock(transport.physical_id, lock_dir(), self.lock_wait_s):
                runner = registry.runners()[device.runner](device, transport)
                return runner.compare(candidate, baseline, record.threads, settings, rounds)
        finally:
            transport.close()

    def energy(self, candidate: Artifact, baseline: Artifact, record: BenchRecord) -> verdict.Comparison | None:
        """Energy per inference, compared like latency: one measurement per side and round, each sampled and
        net of an idle baseline; None on a device without a probe."""
        device = self.inventory[record.device]
        if device.probe == "none":
            return None
        settings = {**record.settings, "options": {record.format: record.options.requested}}
        transport_class = registry.transports()[device.transport]
        transport, probe_transport = transport_class(device), transport_class(device)
        joules = {"baseline": [], "candidate": []}
        try:
            with device_lock(transport.physical_id, lock_dir(), self.lock_wait_s):
                runner = registry.runners()[device.runner](device, transport)
                probe = registry.energy_probes()[device.probe](device, probe_transport)
                for index in range(self.rounds):
                    order = (("baseline", baseline), ("candidate", candidate))
                    for side, artifact in order if index % 2 == 0 else order[::-1]:
                        _, used = energy.measure(probe, lambda a=artifact: runner.measure(a, record.threads, settings))
                        joules[side].append([used.joules_per_inference])
        finally:
            transport.close()
            probe_transport.close()
        return verdict.compare(joules["baseline"], joules["candidate"], self.thresholds)

    def compare(self, candidate: Artifact, baseline: Artifact, record: BenchRecord) -> tuple[verdict.Comparison, dict]:
        """An ``unsure`` answer is measured once more, with twice the rounds, before it stands."""
        rounds = self.rounds
        for _ in range(2):
            raw = self._rounds(candidate, baseline, record, rounds)
            result = verdict.compare([r["baseline"] for r in raw["rounds"]], [r["candidate"] for r in raw["rounds"]],
                                     self.thresholds, throttled=raw.get("context") is not None
                                     and throttled(raw["context"]),
                                     contended=verdict.contention(raw.get("load"), self.thresholds))
            if result.verdict != verdict.UNSURE:
                break
            rounds *= 2
        return result, raw


def exact_changes(candidate, baseline) -> tuple[str, list[str]]:
    """The task's metrics and size compared exactly: a worse metric or a larger file is a regression."""
    notes, worse, better = [], False, tasks.task(candidate.info.dataset.get("task"))[0].better
    for split in ("val", "test"):
        for metric, value in (candidate.info.quality or {}).get(split, {}).items():
            before = (baseline.info.quality or {}).get(split, {}).get(metric)
            if before is not None and value != before:
                notes.append(f"{split} {metric} {before:.4f} → {value:.4f}")
                worse |= (value < before) == (better.get(metric, "higher") == "higher")
    if candidate.info.size.bytes != baseline.info.size.bytes:
        notes.append(f"size {baseline.info.size.bytes:,} → {candidate.info.size.bytes:,} bytes")
        worse |= candidate.info.size.bytes > baseline.info.size.bytes
    return (verdict.REGRESSION if worse else verdict.OK), notes


def evaluate(series: dict, accepted: dict, measurer: Measurer, run_dir: Path) -> dict:
    """One series' row: its verdict, numbers and the files they came from."""
    row = {"recipe": series["recipe"], "format": series["format"], "record": series["record"]}
    record_path = Path(series["record"])
    if not record_path.is_file():
        return {**row, "status": "missing", "reason": "the run produced no record (see its .failed.json)"}
    record = load(BenchRecord, record_path, "bench record")
    row.update(device=record.device, option_set=record.option_set, threads=record.threads,
               median_ms=record.latency.median_ms if record.latency else None, runtime=record.runtime,
               cpu=record.raw.get("cpu"), machine=record.raw.get("machine"))
    # No device figure (an emulator's, a software GPU's): listed, never compared, no effect on the exit code.
    if unlike := sorted(report.NOT_DEVICE_FIGURE & {*record.flags, *["emulated"] * bool(record.emulated)}):
        return {**row, "status": unlike[0], "reason": f"{unlike[0]}: its latency is no device figure"}
    if record.status == "skipped" and (record.error or "").startswith("the artifact is unsupported"):
        return {**row, "status": "unsupported", "reason": record.error}  # a known limit: listed apart
    base = accepted.get("artifacts", {}).get(f"{series['recipe']}|{series['format']}")
    if record.status != "ok" or base is None:
        return {**row, "status": "new" if record.status == "ok" else "missing",
                "reason": "no accepted baseline yet" if record.status == "ok" else record.error}
    try:
        candidate = Artifact.load(series["sidecar"])
        baseline = accepted_artifact(base["sidecar"], base["digest"])
    except ArtifactError as exc:  # a damaged artifact or baseline copy: this series cannot be compared
        return {**row, "status": "infra", "reason": str(exc)}
    exact, notes = exact_changes(candidate, baseline)
    # Byte-identical models measure tonight's noise for free (the verdict's noise line).
    row["identical"] = {n: f.sha256 for n, f in candidate.info.files.items()} == \
        {n: f.sha256 for n, f in baseline.info.files.items()}
    row.update(**{f"{side}{metric}": value for side, artifact in (("test_", candidate), ("baseline_test_", baseline))
                  for metric, value in ((artifact.info.quality or {}).get("test") or {}).items()},
               size_bytes=candidate.info.size.bytes, baseline_size_bytes=baseline.info.size.bytes)
    try:
        result, raw = measurer.compare(candidate, baseline, record)
        used = measurer.energy(candidate, baseline, record)
    except DeviceError as exc:
        return {**row, "status": "infra", "reason": str(exc)}
    except ValueError as exc:  # energy net of idle that is not positive: too small to compare
        used, notes = None, [*notes, f"energy not compared: {exc}"]
    samples = run_dir / "compare" / f"{hashlib.sha256(series_key(row).encode()).hexdigest()[:16]}.json"
    write_json(samples, {"series": {k: row[k] for k in SERIES_KEYS}, "raw": raw, "comparison": result.as_dict(),
                         "energy": used.as_dict() if used else None})
    verdicts = [exact, result.verdict, *([used.verdict] if used else [])]
    status = next((v for v in (verdict.REGRESSION, verdict.UNSURE, verdict.IMPROVEMENT) if v in verdicts), verdict.OK)
    reasons = [result.reason, *([f"energy {used.reason}"] if used else []), *notes]
    return {**row, **{f"latency_{k}": v for k, v in result.as_dict().items() if k != "reason"},
            **({f"energy_{k}": v for k, v in used.as_dict().items() if k != "reason"} if used else {}),
            "status": status, "reason": "; ".join(reasons), "samples": str(samples)}


def exit_code(rows: list[dict]) -> int:
    statuses = {row["status"] for row in rows}
    if statuses & {"missing", "infra"}:
        return EXIT_INFRA
    return EXIT_REGRESSION if verdict.REGRESSION in statuses else EXIT_OK


def git_commit(workdir: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def run(workdir: Path, state: Path, snakemake: list[str], rounds: int, thresholds: verdict.Thresholds,
        track=iter) -> int:
    """The whole nightly; returns the exit code. ``track`` wraps the list of series as they are measured (the CLI
    shows which of how many)."""
    with nightly_lock(state):
        accepted = Baseline(state).load()  # a bad index fails now, not after the night's build
        recover_snakemake_lock(workdir, snakemake)
        built = subprocess.run(snakemake, cwd=workdir)
        plan_path = workdir / "results/report/deployables.json"
        if not plan_path.is_file():
            raise SlimlabError(f"the workflow wrote no {plan_path} (snakemake exited {built.returncode})")
        plan = report.read_plan(plan_path)
        run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run_dir = state / "runs" / run_id
        measurer = Measurer(load_inventory(workdir / plan["inventory"]), rounds, thresholds)
        rows = [evaluate(series, accepted, measurer, run_dir) for series in track(expected_series(plan))]
        if built.returncode != 0:
            # A failed step or report is something a person must look at, like a missing record.
            rows.append({"recipe": "(workflow)", "format": "", "record": "", "status": "infra",
                         "reason": f"snakemake exited {built.returncode}: a step, a benchmark or the report failed; "
                                   "see .snakemake/log/"})
        meta = {"run": run_id, "time": now(), "commit": git_commit(workdir), "snakemake_exit": built.returncode,
                "config_sha256": hashlib.sha256(plan_path.read_bytes()).hexdigest(),
                "baseline": accepted.get("accepted"), "host": platform.node(), "python": sys.version.split()[0]}
        history.History(state / "history").append(run_id, _history_frame(rows, meta))
        code = exit_code(rows)
        write_json(run_dir / "verdict.json", {**meta, "exit_code": code, "series": rows})
        write_bytes(run_dir / "verdict.md", markdown(rows, meta).encode())
        return code


def _history_frame(rows: list[dict], meta: dict) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for key, value in meta.items():
        frame[f"run_{key}"] = value
    return frame
