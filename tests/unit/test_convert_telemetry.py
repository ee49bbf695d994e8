"""The MNN path must never phone home: no MNN.tools (telemetry log module), no socket, no pip.

Every Python process of the conversion (the step and the converter child it
spawns) gets an audit hook through ``sitecustomize``; the hook appends what it
sees to a file, so the test sees events from all of them.
"""

import json
import os

import pytest

from tests.support import DIGITS, slimlab

AUDIT_HOOK = '''
import json, os, socket, sys

_LOG = os.environ["SLIMLAB_AUDIT_LOG"]

def _note(kind, detail):
    with open(_LOG, "a") as log:
        log.write(json.dumps({"pid": os.getpid(), "kind": kind, "detail": detail}) + "\\n")

def _hook(event, args):
    if event == "import" and (args[0] == "_tools" or args[0].startswith(("MNN.tools", "aliyun"))):
        _note("import", args[0])
    elif event == "socket.connect" and args[0].family in (socket.AF_INET, socket.AF_INET6):
        _note("socket", str(args[1]))
        raise PermissionError("network is blocked in this test")
    elif event == "socket.getaddrinfo":
        _note("socket", str(args[0]))
        raise PermissionError("network is blocked in this test")
    elif event == "subprocess.Popen":
        _note("spawn", [str(a) for a in (args[1] or [])])

sys.addaudithook(_hook)
'''


@pytest.mark.slow
@pytest.mark.parametrize("source", ["fp32", "keras"])
def test_mnn_conversion_touches_no_telemetry_network_or_pip(tiny_artifacts, tmp_path, source):
    (tmp_path / "sitecustomize.py").write_text(AUDIT_HOOK)
    log = tmp_path / "audit.jsonl"
    step = {"stage": "convert.mnn", "params": {}, "dataset": DIGITS}
    result = slimlab(
        "run-step", "--step", json.dumps(step), "--input", str(tiny_artifacts[source].sidecar),
        "--output", str(tmp_path / "mnn" / "artifact.json"),
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
             "SLIMLAB_AUDIT_LOG": str(log)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    imports = [e["detail"] for e in events if e["kind"] == "import"]
    assert "_tools" in imports, "the audit hook did not see the converter: the test proves nothing"
    assert not [name for name in imports if name != "_tools"], imports
    assert not [e for e in events if e["kind"] == "socket"]
    spawned = [e["detail"] for e in events if e["kind"] == "spawn"]
    assert spawned and not [argv for argv in spawned if any("pip" in os.path.basename(a) for a in argv)]
    assert not [argv for argv in spawned if any(os.path.basename(a) in ("mnnconvert", "mnnquant") for a in argv)]
