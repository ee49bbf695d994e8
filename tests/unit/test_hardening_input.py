"""Issue 9: hostile names and numbers in the config and inventory, corrupt records, and files written for others.

tests/unit/test_fuzz_config.py feeds mutated configs and inventories (NaN, negative seeds, `threads: [1, 1]`,
duplicate keys, aliases, non-UTF-8, odd names...) through `slimlab validate` and checks each is refused in one
line. The cases here are the ones it does not cover, or covers without checking what the line says. Every test
says which behaviour of the old code (commit 82ee2fe) it catches.
"""

import copy
import errno
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from slimlab import cli, registry
from slimlab.artifacts import SIDECAR, Artifact
from slimlab.atomic import atomic_path, write_json
from slimlab.errors import ArtifactError, ConfigError, PluginError
from slimlab.lab import bench
from slimlab.lab.bench import BenchFailed
from slimlab.records import BenchFailure, failure_note_path, load
from tests.support import DEFAULT_CONFIG, REPO, bench_block, local_device

INVENTORY = yaml.safe_load((REPO / "devices/lab.yaml").read_text())
NAME_PATTERN = "'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'"


def validate(tmp_path, capsys, config=None, inventory=None) -> tuple[int, str]:
    """``slimlab validate`` (in this process) on the default config and inventory after ``config(cfg)`` and
    ``inventory(inv)`` edit them; its exit code and what it printed on stderr."""
    cfg, inv = copy.deepcopy(DEFAULT_CONFIG), copy.deepcopy(INVENTORY)
    if config:
        config(cfg)
    if inventory:
        inventory(inv)
    cfg["lab"]["inventory"] = str(tmp_path / "lab.yaml")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump(inv))
    capsys.readouterr()
    code = cli.main(["validate", str(tmp_path / "config.yaml")])
    return code, capsys.readouterr().err


def add_device(name: str):
    return lambda inv: inv["devices"].update({name: copy.deepcopy(inv["devices"]["localhost"])})


def add_option_set(name: str):
    return lambda cfg: cfg["bench"]["option_sets"].update({name: {}})


def add_recipe(name: str):
    return lambda cfg: cfg["recipes"].update({name: ["train"]})


@pytest.mark.parametrize("name", [".", "..", "-x", "a" * 300], ids=[".", "..", "-x", "300 chars"])
@pytest.mark.parametrize("where", ["device", "option set", "recipe"])
def test_unsafe_names_are_refused_in_one_line(where, name, tmp_path, capsys):
    # Old: the name pattern was ^[A-Za-z0-9_.-]+$ and validate never read the inventory: `..` sent records out of
    # results/bench, `-x` became an option of the commands it was passed to, and 300 characters failed on the
    # lock file (ENAMETOOLONG) in the middle of a run.
    if where == "device":
        code, err = validate(tmp_path, capsys, inventory=add_device(name))
        expected = f"{tmp_path / 'lab.yaml'}: devices: {name!r}"
    else:
        edit, key = (add_option_set, "bench.option_sets") if where == "option set" else (add_recipe, "recipes")
        code, err = validate(tmp_path, capsys, config=edit(name))
        expected = f"{tmp_path / 'config.yaml'}: {key}: {name!r}"
    assert (code, err) == (2, f"slimlab: error: {expected} does not match {NAME_PATTERN}\n")


@pytest.mark.parametrize("where", ["device", "option set", "recipe"])
def test_names_that_differ_only_in_punctuation(where, tmp_path, capsys):
    # Old: devices `a-b` and `a.b` both made the rule bench_device_a_b, and snakemake failed with "rule name
    # already used". Option sets and recipes never become rule names (their paths and wildcards keep the
    # punctuation), so there both are fine.
    add = {"device": add_device, "option set": add_option_set, "recipe": add_recipe}[where]
    edit = {"inventory" if where == "device" else "config": lambda doc: (add("a-b")(doc), add("a.b")(doc))}
    code, err = validate(tmp_path, capsys, **edit)
    if where == "device":
        assert (code, err) == (2, f"slimlab: error: {tmp_path / 'lab.yaml'}: devices 'a-b' and 'a.b' differ only in "
                                  "punctuation, which Snakemake's resource names drop (both are device_a_b); "
                                  "rename one\n")
    else:
        assert (code, err) == (0, "")


@pytest.mark.parametrize("where, key, value", [
    ("config", "bench.min_seconds", math.nan),
    ("config", "bench.timeout_s", math.nan),
    ("inventory", "devices.localhost.noisy_cv", math.nan),
    ("inventory", "devices.localhost.min_seconds", math.inf),
])
def test_non_finite_numbers_are_refused_in_one_line(where, key, value, tmp_path, capsys):
    # Old: accepted; a NaN time floor or timeout never ends (or never fires), a NaN noisy_cv turns the flag off.
    def edit(doc):
        *parents, last = key.split(".")
        for part in parents:
            doc = doc[part]
        doc[last] = value

    code, err = validate(tmp_path, capsys, **{where: edit})
    source = tmp_path / ("config.yaml" if where == "config" else "lab.yaml")
    assert (code, err) == (2, f"slimlab: error: {source}: {key}: {value} is not a finite number\n")


CORRUPT = {
    "cut off": b'{"schema_version": 2, "format": "tfl',
    "not UTF-8": b'{"schema_version": 2, "format": "\xff\xfe"}',
    "not an object": b"[1, 2, 3]",
    "wrong types": b'{"schema_version": 2, "format": 3, "lineage": "train", "dataset": []}',
}


def one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("slimlab: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("damage", CORRUPT)
def test_a_step_on_a_corrupt_input_sidecar_fails_in_one_line(damage, tmp_path, capfd):
    # Old: the client read the input sidecar to pick a zygote with a bare json.loads: a traceback.
    sidecar = tmp_path / "artifact" / SIDECAR
    sidecar.parent.mkdir()
    sidecar.write_bytes(CORRUPT[damage])
    step = {"stage": "quantize.int8", "params": {}, "output": "tflite", "dataset": {"name": "mnist"}}
    code = cli.main(["run-step", "--step", json.dumps(step), "--input", str(sidecar),
                     "--output", str(tmp_path / "out" / SIDECAR)])
    line = one_error_line(capfd.readouterr().err)
    assert code == 2 and line.startswith(f"slimlab: error: {sidecar}: artifact sidecar ")
    assert not (tmp_path / "out" / SIDECAR).exists()


@pytest.mark.parametrize("damage", CORRUPT)
def test_bench_on_a_corrupt_sidecar_fails_in_one_line_with_a_note(damage, tmp_path, capfd):
    # Old: `slimlab bench` read the sidecar with a bare json.loads before anything else: a JSONDecodeError (or
    # UnicodeDecodeError, AttributeError) traceback, and no failure note for the report.
    # capfd: the command runs in a zygote's child, which writes to this process's file descriptors.
    sidecar = tmp_path / "artifact" / SIDECAR
    sidecar.parent.mkdir()
    sidecar.write_bytes(CORRUPT[damage])
    (tmp_path / "lab.yaml").write_text(yaml.safe_dump({"devices": {"here": {
        "transport": "local", "runner": "python", "workdir": str(tmp_path / "device")}}}))
    out = tmp_path / "record" / "threads-1.json"
    code = cli.main(["bench", "--inventory", str(tmp_path / "lab.yaml"), "--device", "here", "--artifact",
                     str(sidecar), "--threads", "1", "--settings", json.dumps(bench_block()), "--output", str(out)])
    line = one_error_line(capfd.readouterr().err)
    assert code == 2 and line.startswith(f"slimlab: error: bench of {sidecar} on device 'here' failed (tool_error): "
                                         f"{sidecar}: artifact sidecar ")
    note = load(BenchFailure, failure_note_path(out), "bench failure note")
    assert note.tag == "tool_error" and note.reason.startswith(f"{sidecar}: artifact sidecar ")


@pytest.mark.parametrize("corrupt", ["sidecar", "bench record", "failure note"])
def test_report_on_a_corrupt_file_fails_in_one_line(corrupt, tiny_artifacts, tmp_path, capsys):
    # Old: the report read every sidecar and record with a bare json.loads: a JSONDecodeError traceback.
    sidecar = tiny_artifacts["fp32"].sidecar
    record = tmp_path / "bench" / "threads-1.json"
    record.parent.mkdir()
    if corrupt == "sidecar":
        sidecar = tmp_path / "artifact" / SIDECAR
        sidecar.parent.mkdir()
        sidecar.write_bytes(CORRUPT["cut off"])
    damaged = {"sidecar": sidecar, "bench record": record, "failure note": failure_note_path(record)}[corrupt]
    damaged.write_bytes(CORRUPT["cut off"])
    deployables = tmp_path / "deployables.json"
    deployables.write_text(json.dumps({"deployables": [
        {"recipe": "baseline", "format": "tflite", "sidecar": str(sidecar), "records": [str(record)]}]}))
    code = cli.main(["report", "build", "--deployables", str(deployables), "--outdir", str(tmp_path / "report")])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and line.startswith(f"slimlab: error: {damaged}: ") and "is not valid JSON" in line


@pytest.mark.parametrize("error", [PluginError("plugin 'x' failed"), ConfigError("lab.yaml: bad key"),
                                   OSError(errno.ENOSPC, "No space left on device")], ids=lambda e: type(e).__name__)
def test_a_plugin_config_or_os_error_in_a_bench_job_leaves_a_tagged_note(error, tiny_artifacts, tmp_path,
                                                                         monkeypatch):
    # Old: bench.run caught only DeviceError: these escaped as tracebacks and the report had no note to show.
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(registry.runners()["python"], "measure", fail)
    out = tmp_path / "record" / "threads-1.json"
    with pytest.raises(BenchFailed, match=r"on device 'here' failed \(tool_error\): "):
        bench.run(local_device(tmp_path / "device"), tiny_artifacts["fp32"].sidecar, 1, bench_block(), out,
                  locks=tmp_path / "locks")
    note = load(BenchFailure, failure_note_path(out), "bench failure note")
    reason = str(error) if isinstance(error, (PluginError, ConfigError)) else f"OSError: {error}"
    assert (note.tag, note.reason) == ("tool_error", reason) and not out.exists()


def test_a_sidecar_that_lists_no_files_does_not_vouch_for_a_tampered_model(tiny_artifacts, tmp_path):
    # Old: Artifact.verify checked only the files the sidecar itself listed: with `"files": {}` it checked none.
    folder = shutil.copytree(tiny_artifacts["fp32"].dir, tmp_path / "fp32")
    sidecar = json.loads((folder / SIDECAR).read_text())
    (folder / SIDECAR).write_text(json.dumps({**sidecar, "files": {}}))
    with open(folder / "model.tflite", "r+b") as model:
        model.seek(100)
        model.write(b"tampered")
    with pytest.raises(ArtifactError, match=rf"^{folder / SIDECAR}: the sidecar lists no model.tflite, which a "
                                            "tflite artifact has$"):
        Artifact.load(folder / SIDECAR)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)],
                         ids=["umask 022", "umask 002", "umask 077"])
def test_atomic_writes_respect_the_umask(umask, mode, tmp_path):
    # Old: every file came out of mkstemp as 0600, whatever the umask: a team's results folder or a web
    # server could not read the records and the report.
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "record.json", {"a": 1})
        with atomic_path(tmp_path / "model.keras") as tmp:  # writers (Keras) that are handed a path
            tmp.write_bytes(b"model")
    finally:
        os.umask(previous)
    assert {path.name: path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == \
        {"record.json": mode, "model.keras": mode}


def test_concurrent_atomic_writes_leave_the_umask_alone(tmp_path, monkeypatch):
    # Old: 0600 files (see above). The first fix read the umask by setting it to 0 and back: a thread switch
    # between the two calls (made likely here: os.umask yields) let two writers interleave, and files came out
    # 0666, writable by anyone, or the process kept umask 0. (Unpatched, 11 of 2400 files with 8 threads.)
    previous, real_umask = os.umask(0o022), os.umask

    def yielding_umask(mask: int) -> int:
        old = real_umask(mask)
        time.sleep(0.001)
        return old

    def write_some(thread: int) -> None:
        for n in range(10):
            write_json(tmp_path / f"{thread}-{n}.json", {})

    monkeypatch.setattr(os, "umask", yielding_umask)
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write_some, range(8)))
    finally:
        monkeypatch.undo()
        umask_after = os.umask(previous)
    assert umask_after == 0o022
    assert {path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == {0o644}
