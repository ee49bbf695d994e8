"""The zygotes: slimlab (and, for Keras steps, TensorFlow) loaded once per machine, every job still its own process
with its own log."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slimlab import zygote
from tests.support import DIGITS, REPO, lab_unavailable

PROBE = textwrap.dedent('''
    """probe.*: stages that report on the process they run in."""
    import os
    import signal
    import sys
    import time

    from slimlab import hookimpl
    from slimlab.stages import Stage


    def where(artifact, params, ctx):
        """Record whether TensorFlow was loaded before this step touched it, and who started this process."""
        ctx.record(tensorflow_preloaded="tensorflow" in sys.modules, parent=os.getppid(), pid=os.getpid())
        from slimlab.kit.training import build_model

        return build_model("cnn", {"width": 2, "dense": 4}, ctx.splits, ctx.seed)


    def crash(artifact, params, ctx):
        """Die the hard way."""
        os.kill(os.getpid(), signal.SIGSEGV)


    def where_plain(artifact, params, ctx):
        """The same, for a step that never needs TensorFlow: print it (a TFLite step records no metrics of its
        own here), and pass the model on unchanged."""
        umask = os.umask(0)
        os.umask(umask)
        print(f"tensorflow loaded: {'tensorflow' in sys.modules} parent: {os.getppid()} umask: {umask:o} "
              f"cpus: {','.join(map(str, sorted(os.sched_getaffinity(0))))}")
        return artifact.model


    def linger(artifact, params, ctx):
        """Say where it runs, then wait long enough to be killed."""
        with open(os.environ["PROBE_PIDFILE"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)


    @hookimpl
    def register_stages(register):
        for name, run in (("probe.where", where), ("probe.crash", crash), ("probe.linger", linger)):
            register(Stage(name, run, inputs=(), output="keras"))
        register(Stage("probe.where_plain", where_plain, inputs=("tflite",), output="tflite"))
''')


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("zygote")
    (root / "plugins").mkdir()
    (root / "plugins/probe.py").write_text(PROBE)
    # A zygote of this module's own (its socket folder comes from XDG_RUNTIME_DIR), shared by its tests.
    runtime = root / "run"
    runtime.mkdir(mode=0o700)
    yield {**os.environ, "SLIMLAB_PLUGINS_DIR": str(root / "plugins"), "XDG_RUNTIME_DIR": str(runtime)}
    for sock in runtime.rglob("zygote-*.sock"):  # stop it: it would idle on for minutes
        pid = subprocess.run(["fuser", str(sock)], capture_output=True, text=True).stdout.split()
        for p in pid:
            os.kill(int(p), signal.SIGTERM)


def run_step(stage: str, out: Path, env: dict, **kwargs) -> subprocess.CompletedProcess:
    step = json.dumps({"stage": stage, "params": {}, "output": "keras", "dataset": DIGITS})
    return subprocess.run([sys.executable, "-m", "slimlab.cli", "run-step", "--step", step, "--output", str(out)],
                          env=env, capture_output=True, text=True, **kwargs)


def metrics(out: Path) -> dict:
    return json.loads(out.read_text())["metrics"]


def test_a_keras_step_runs_in_a_child_of_the_zygote_with_tensorflow_loaded(tmp_path, env):
    first, second = (run_step("probe.where", tmp_path / name / "artifact.json", env) for name in ("a", "b"))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = metrics(tmp_path / "a/artifact.json"), metrics(tmp_path / "b/artifact.json")
    assert a["tensorflow_preloaded"] and b["tensorflow_preloaded"]
    assert a["parent"] == b["parent"] and a["pid"] != b["pid"]  # one zygote, one child per job
    alone = run_step("probe.where", tmp_path / "c/artifact.json", {**env, "SLIMLAB_ZYGOTE": "0"})
    assert alone.returncode == 0 and not metrics(tmp_path / "c/artifact.json")["tensorflow_preloaded"]


def test_a_crash_stays_in_its_job_and_the_next_job_runs(tmp_path, env):
    crashed = run_step("probe.crash", tmp_path / "x/artifact.json", env)
    assert crashed.returncode == 128 + signal.SIGSEGV
    after = run_step("probe.where", tmp_path / "y/artifact.json", env)
    assert after.returncode == 0 and metrics(tmp_path / "y/artifact.json")["tensorflow_preloaded"]


def test_killing_the_job_ends_its_child(tmp_path, env):
    pidfile = tmp_path / "linger.pid"
    job = subprocess.Popen([sys.executable, "-m", "slimlab.cli", "run-step", "--step",
                            json.dumps({"stage": "probe.linger", "params": {}, "output": "keras", "dataset": DIGITS}),
                            "--output", str(tmp_path / "z/artifact.json")], env={**env, "PROBE_PIDFILE": str(pidfile)})
    deadline = time.monotonic() + 180
    while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    child = int(pidfile.read_text())
    assert child != job.pid and Path(f"/proc/{child}").exists()  # the step runs in the zygote's child
    job.kill()
    job.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists()


def test_a_job_without_keras_never_imports_tensorflow(tiny_artifacts, tmp_path):
    step = json.dumps({"stage": "convert.mnn", "params": {}, "output": "mnn", "dataset": DIGITS})
    code = textwrap.dedent(f"""
        import sys
        from slimlab.cli import main
        code = main(["run-step", "--step", {step!r}, "--input", {str(tiny_artifacts['fp32'].sidecar)!r},
                     "--output", {str(tmp_path / 'mnn/artifact.json')!r}])
        print("tensorflow loaded:", "tensorflow" in sys.modules)
        sys.exit(code)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "SLIMLAB_ZYGOTE": "0"})  # in this process, to look at its modules
    assert done.returncode == 0, done.stderr
    assert "tensorflow loaded: False" in done.stdout


def plain_step(tiny_artifacts, out: Path, env: dict, **kwargs) -> tuple[bool, int]:
    """Run probe.where_plain on the fp32 TFLite model; whether TensorFlow was loaded where it ran, and its parent."""
    done = plain_job(tiny_artifacts, out, env, **kwargs)
    loaded, parent = re.search(r"tensorflow loaded: (\w+) parent: (\d+)", done.stdout).groups()
    return loaded == "True", int(parent)


def plain_job(tiny_artifacts, out: Path, env: dict, **kwargs) -> subprocess.CompletedProcess:
    step = json.dumps({"stage": "probe.where_plain", "params": {}, "output": "tflite", "dataset": DIGITS})
    done = subprocess.run([sys.executable, "-m", "slimlab.cli", "run-step", "--step", step, "--input",
                           str(tiny_artifacts["fp32"].sidecar), "--output", str(out)],
                          env=env, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, done.stderr
    return done


def test_a_job_without_keras_runs_in_the_plain_zygote_which_never_imports_tensorflow(tiny_artifacts, tmp_path, env):
    first, second = (plain_step(tiny_artifacts, tmp_path / name / "artifact.json", env) for name in ("a", "b"))
    assert first == second and not first[0]  # one zygote, and no TensorFlow in it
    assert first[1] != os.getpid()
    keras = run_step("probe.where", tmp_path / "k/artifact.json", env)
    assert keras.returncode == 0 and metrics(tmp_path / "k/artifact.json")["parent"] != first[1]  # the other kind


def test_the_child_has_the_jobs_umask_and_cores(tiny_artifacts, tmp_path, env):
    def restricted():
        os.umask(0o027)
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    plain_step(tiny_artifacts, tmp_path / "a/artifact.json", env)  # the zygote, started with this test's umask
    done = plain_job(tiny_artifacts, tmp_path / "b/artifact.json", env, preexec_fn=restricted)
    cpu = min(os.sched_getaffinity(0))
    assert f"umask: 27 cpus: {cpu}\n" in done.stdout
    assert oct(os.stat(tmp_path / "b/artifact.json").st_mode & 0o777) == "0o640"


def test_a_job_in_another_network_namespace_gets_a_zygote_of_its_own():
    # A bench job run under `ip netns exec` must reach its board from that namespace, not from the zygote's.
    if os.geteuid() != 0 or not shutil.which("unshare"):
        lab_unavailable("a new network namespace (unshare --net) needs root")
    code = "from slimlab import zygote; print(zygote.socket_path('plain', 'slimlab.cli'))"
    inside = subprocess.run(["unshare", "--net", sys.executable, "-c", code], capture_output=True, text=True)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() != str(zygote.socket_path("plain", "slimlab.cli"))


def test_a_zygote_whose_code_changed_serves_no_more_jobs(tiny_artifacts, tmp_path, env):
    imports = tmp_path / "imports"
    imports.mkdir()
    env = {**env, "PYTHONPATH": f"{imports}:{env.get('PYTHONPATH', '')}"}  # a zygote of this test's own
    _, parent = plain_step(tiny_artifacts, tmp_path / "a/artifact.json", env)
    assert plain_step(tiny_artifacts, tmp_path / "b/artifact.json", env)[1] == parent
    (imports / "newly_installed.py").write_text("")  # a folder on its import path changed
    _, stale = plain_step(tiny_artifacts, tmp_path / "c/artifact.json", env)
    _, fresh = plain_step(tiny_artifacts, tmp_path / "d/artifact.json", env)
    assert stale not in (parent, fresh)  # turned away: the job ran in its own process
    assert fresh != parent
    deadline = time.monotonic() + 10  # and the stale zygote, with no job left, has ended
    while not exited(parent) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert exited(parent)


def exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_sources_notice_an_edited_module(tmp_path, monkeypatch):
    (tmp_path / "edited_module.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import edited_module  # noqa: F401

    before = zygote.sources()
    os.utime(tmp_path / "edited_module.py", ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    assert zygote.sources() != before


@pytest.mark.parametrize("env, expected", [
    ({}, True),
    ({"SLIMLAB_ZYGOTE": "0"}, False),
    ({"SLURM_JOB_ID": "17"}, False),  # a zygote would live and die with the Slurm job that started it
    ({"SLURM_JOB_ID": "17", "SLIMLAB_ZYGOTE": "1"}, True),
    ({"SLIMLAB_IN_ZYGOTE": "1"}, False),  # a zygote's child never asks a zygote
])
def test_when_the_zygote_is_used(monkeypatch, env, expected):
    for name in ("SLIMLAB_ZYGOTE", "SLURM_JOB_ID", "SLIMLAB_IN_ZYGOTE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert zygote.enabled() is expected
