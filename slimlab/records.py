"""The typed files slimlab writes: artifact sidecars, bench records and bench failure notes.

Every stage, the lab, the report and ``bench/`` read and write these models, never
raw dicts, and nothing recovers a fact from a file's path. Each file carries
``schema_version``; one written by another version, or not valid, is refused with
a one-line error that names the file and says what to do.
"""

import datetime as dt
import json
from pathlib import Path
from typing import Literal, TypeVar

import pydantic

from slimlab import __version__
from slimlab.atomic import write_bytes
from slimlab.errors import ArtifactError

SCHEMA_VERSION = 3
# The measurement settings, named once. The config's `bench` block sets each and a device in the inventory may
# override each: both schemas take their rules from `$defs.measurement` in workflow/schemas/config.schema.yaml
# (slimlab.config.schema checks that it names these keys). A record is at one thread count, so it keeps the
# others as its `settings`.
MEASUREMENT_KEYS = ("threads", "warmup", "runs", "min_seconds", "max_samples", "timeout_s", "noisy_cv")
RECORD_SETTINGS = tuple(key for key in MEASUREMENT_KEYS if key != "threads")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Record(pydantic.BaseModel):
    # An output identical to its reference has an infinite SNR: kept as JSON's usual extension, Infinity.
    model_config = pydantic.ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    schema_version: int = SCHEMA_VERSION
    slimlab_version: str = __version__
    created: str = pydantic.Field(default_factory=now)

    def save(self, path: str | Path) -> None:
        write_bytes(path, (self.model_dump_json(indent=2) + "\n").encode())


R = TypeVar("R", bound=Record)


def load(model: type[R], path: str | Path, what: str) -> R:
    """Read one ``model`` file; a missing, corrupt or other-version file is one ArtifactError line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: {what} is not valid JSON ({exc}); delete it and rerun") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"{path}: {what} has schema version {version}, this slimlab reads {SCHEMA_VERSION}; "
                            "delete it (or run snakemake with --forceall) to rebuild it")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ArtifactError(f"{path}: {what} is invalid at {where}: {first['msg']}") from None


# --- artifacts ------------------------------------------------------------------------


class Step(pydantic.BaseModel):
    """One step of an artifact's lineage."""

    model_config = pydantic.ConfigDict(extra="forbid")

    stage: str
    params: dict
    changed: dict = {}  # the params that differ from the stage's defaults
    code: str | None = None  # fingerprint of the plugin code that ran (slimlab.identity)
    artifact: str | None = None  # the folder of the artifact this step produced

    def describe(self) -> str:
        """``prune.magnitude(sparsity=0.9, layers=[conv2, fc1])``."""
        if not self.changed:
            return self.stage
        return f"{self.stage}({', '.join(f'{k}={_text(v)}' for k, v in sorted(self.changed.items()))})"


def _text(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    return str(value).lower() if isinstance(value, bool) else str(value)


class FileInfo(pydantic.BaseModel):
    bytes: int
    sha256: str


class Size(pydantic.BaseModel):
    bytes: int
    gzip_bytes: int


class ParamCount(pydantic.BaseModel):
    count: int | None
    nonzero: int | None


class Sidecar(Record):
    """``artifact.json``: what an artifact is, where it came from, and what it measured."""

    status: Literal["ok", "failed", "unsupported"] = "ok"
    format: str
    error: str | None = None  # a failed or unsupported step's one-line message
    # A failed step's environment (slimlab.identity.environment): the workflow retries it once that changes.
    environment: str | None = None
    files: dict[str, FileInfo] = {}
    lineage: list[Step]
    dataset: dict
    input_shape: list[int] | None = None  # NHWC with a batch of one
    size: Size | None = None
    params: ParamCount | None = None
    # The measured share of exact zeros among the stored weights (prune.* params say what was asked).
    zero_fraction: float | None = None
    # Multiply-accumulates of one inference: the total and per layer (or op), where the format can count them.
    macs: dict | None = None
    # Top-1 accuracy by split, for a classifier with labels (the task's metrics hold it too).
    accuracy: dict[str, float] | None = None
    # The task's metrics by split ({"task", "val": {...}, "test": {...}}), where the data has labels.
    quality: dict | None = None
    # Per output, against the recipe's source model on the test split ({"reference", "outputs", "agreement"}).
    fidelity: dict | None = None
    metrics: dict = {}
    # How long the job took to reach the stage's work (process start, imports, data) and the work itself.
    timing: dict | None = None

    @property
    def steps(self) -> str:
        return " → ".join(step.describe() for step in self.lineage)


# --- bench records --------------------------------------------------------------------


class Latency(pydantic.BaseModel):
    """Latency statistics in ms; None where a native tool does not report one."""

    n: int
    median_ms: float | None
    p90_ms: float | None = None
    min_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    std_ms: float | None = None
    cv: float | None = None
    p5_ms: float | None = None
    p95_ms: float | None = None


class Options(pydantic.BaseModel):
    """A record's runtime options: asked for (the option set), reported back by the runtime, and honoured."""

    requested: dict = {}
    reported: dict = {}
    honoured: list[str] = []


class Energy(pydantic.BaseModel):
    """Energy per inference, net of an idle baseline. Without a probe every number is None and ``reason`` says why."""

    probe: str
    joules_per_inference: float | None = None
    avg_power_w: float | None = None  # during the timed runs, idle included
    idle_power_w: float | None = None
    window_s: float | None = None
    inferences: int | None = None
    samples: int | None = None
    reason: str | None = None


class Emulation(pydantic.BaseModel):
    """The device is an emulator (the inventory's ``emulated``): its records show what ran and with what output,
    not how fast a device is."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    qemu_cpu: str | None = None  # the core qemu-user emulates (QEMU_CPU), where the inventory names it


class DeviceEval(pydantic.BaseModel):
    """The artifact run on the device over the first ``samples`` of the test split, against the host's outputs for
    the same file (``python: {evaluate: N}``)."""

    samples: int
    outputs: dict[str, dict]  # per output: fidelity to the host's (snr_db, cosine, max_abs_diff_rel, ...)
    accuracy: float | None = None  # a classifier's, on the device, where the data has labels
    host_accuracy: float | None = None  # the host's, same samples
    agreement: float  # a classifier's top-1 agreement with the host; else the outputs' least cosine
    max_abs_diff_rel: float  # the largest over the outputs, relative to each output's range
    bounds: dict  # the parity bounds applied (float or quantized, by the artifact's lineage)
    passed: bool  # agreement (and a classifier's accuracy) within the bounds; differences reported, not judged


class BenchTarget(Record):
    """What a bench job measures: one artifact, on one device, with one option set and thread count."""

    device: str
    transport: str
    runner: str
    host: str
    artifact: str  # the artifact's folder
    artifact_sha256: str | None = None
    format: str
    option_set: str
    threads: int
    settings: dict  # RECORD_SETTINGS: the measurement settings it ran with
    emulated: Emulation | None = None  # the device is an emulator: its latency is not a device figure


class BenchRecord(BenchTarget):
    """``threads-<n>.json``: one benchmark."""

    status: Literal["ok", "skipped"] = "ok"
    error: str | None = None  # why a skipped record has no numbers
    runtime: str | None = None
    options: Options = Options()
    payload_sha256: str | None = None
    wall_ms: float | None = None
    init_ms: float | None = None
    first_inference_ms: float | None = None
    latency: Latency | None = None
    latencies_ms: list[float] | None = None
    flags: list[str] = []
    context: dict | None = None
    energy: Energy | None = None
    memory: dict | None = None
    device_eval: DeviceEval | None = None
    raw: dict = {}  # what else the runner reported


def failure_note_path(record: str | Path) -> Path:
    """Where a failed bench job leaves its note: ``threads-1.json`` -> ``threads-1.failed.json``."""
    record = Path(record)
    return record.with_name(f"{record.stem}.failed.json")


class BenchFailure(BenchTarget):
    """``threads-<n>.failed.json``: why a bench job wrote no record (the next run retries it)."""

    status: Literal["failed"] = "failed"
    tag: Literal["offline", "timeout", "tool_error"]
    reason: str
