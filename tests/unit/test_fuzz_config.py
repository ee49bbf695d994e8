"""Mutated configs and inventories through `slimlab validate` and `snakemake -n`.

Each mutant (seeded: deleted, renamed and retyped keys, NaN, infinite, huge and negative
numbers, odd names, duplicate keys, aliases and an alias bomb, non-mapping roots,
non-UTF-8 bytes, cut-off and empty files) must be refused with one `slimlab: error:`
line, or be accepted, by both commands alike: no traceback, no hang, no memory blow-up
(each command runs under a 4 GB address-space limit).

`snakemake -n` takes 5 to 20 s per run, so it runs on 15 configs and 10 inventories
(SNAKEMAKE: every kind of damaged file, and a value or two); `slimlab validate` runs on
all of them. Snakemake parses the config file itself (the Snakefile's `configfile:`)
before slimlab's strict reader sees it, so YAML it cannot read (not a mapping, empty, a
Python tag, bad syntax) gets Snakemake's own two lines, "WorkflowError in file
Snakefile, line 8:" and "Config file ...": a clear refusal, counted as one. Where it
prints a stack instead (bytes that are not UTF-8, deep nesting) the test is marked
xfail: the Snakefile must let slimlab read the file first.
"""

import copy
import math
import os
import random
import re
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from slimlab import cli
from tests.support import REPO

pytestmark = pytest.mark.slow

CONFIG = (REPO / "config/config.yaml").read_text()
INVENTORY = (REPO / "devices/lab.yaml").read_text()
MEMORY_LIMIT = 4 << 30
TIMEOUT_S = 300
ODD_NAMES = [".", "..", "-x", "a" * 300, "ünïcödé", "", "a/b", "x y"]
NUMBERS = [math.nan, math.inf, -math.inf, 1e308, 10**30, 2**64, -1, -0.5, 0]
OTHER_VALUES = [[], {}, "text", 3, 2.5, True, None, [1, "a"], {"k": 1}]


@dataclass(frozen=True)
class Mutant:
    id: str
    config: bytes = CONFIG.encode()
    inventory: bytes = INVENTORY.encode()
    refused: bool | None = None  # None: either way, as long as both commands agree


class NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def dump(doc) -> bytes:
    return yaml.dump(doc, Dumper=NoAliases, sort_keys=False, allow_unicode=True).encode()


def edited(text: str, edit) -> bytes:
    doc = yaml.safe_load(text)
    edit(doc)
    return dump(doc)


def renamed(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def bomb(levels: int = 9) -> str:
    """A "billion laughs": 9**9 strings if expanded."""
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def shared(text: str, path: tuple, other: tuple) -> bytes:
    """The value at ``other`` made the very object at ``path``: YAML writes an anchor and an alias."""
    doc = yaml.safe_load(text)
    node = doc
    for key in path:
        node = node[key]
    parent = doc
    for key in other[:-1]:
        parent = parent[key]
    parent[other[-1]] = node
    return yaml.safe_dump(doc, sort_keys=False).encode()


def common_cases(text: str, where: str) -> list[tuple[str, bytes]]:
    """File-level damage that any YAML file can suffer. A file cut at a line end may still be valid: YAML has no
    end marker, so a cut file is refused or accepted, never half read."""
    data = text.encode()
    rng = random.Random(f"file-{where}")
    cut_at = rng.randrange(len(data) // 3, len(data))
    junk_at = rng.randrange(len(data))
    return [
        ("root-list", b"- dataset\n- recipes\n"),
        ("root-scalar", b"42\n"),
        ("root-null", b"~\n"),
        ("empty", b""),
        ("comment-only", b"# nothing here\n"),
        ("latin-1", ("# caf\u00e9\n" + text).encode("latin-1")),
        ("junk-bytes", data[:junk_at] + b"\xff\xfe" + data[junk_at:]),
        ("utf-16", text.encode("utf-16")),
        ("cut", data[:cut_at]),
        ("alias-bomb", data + bomb().encode()),
        ("deep", data + b"deep: " + b"[" * 5000 + b"]" * 5000 + b"\n"),
        ("python-tag", data + b'pwned: !!python/object/apply:os.system ["touch pwned"]\n'),
        ("huge", data + b"# " + b"x" * (5 << 20) + b"\n"),
    ]


def config_mutants() -> list[Mutant]:
    targeted = [Mutant(name, config=data, refused=None if name == "cut" else True)
                for name, data in common_cases(CONFIG, "config")]
    targeted += [
        Mutant("duplicate-top-key", config=(CONFIG + "formats: [tflite]\n").encode(), refused=True),
        Mutant("duplicate-nested-key", config=CONFIG.replace("  seed: 42", "  seed: 42\n  seed: 7").encode(),
               refused=True),
        Mutant("alias", config=shared(CONFIG, ("stage_defaults", "train"), ("stage_defaults", "distill")),
               refused=True),
        Mutant("recipe-a-b-beside-a.b", config=edited(CONFIG, lambda d: d["recipes"].update(
            {"a-b": ["train"], "a.b": ["train"]})), refused=None),
    ]
    # Values the issue found accepted in silence, and names that reach paths and command lines.
    values = {
        "nan-val-fraction": lambda d: d["dataset"].update(val_fraction=math.nan),
        "nan-noisy-cv": lambda d: d["bench"].update(noisy_cv=math.nan),
        "inf-timeout": lambda d: d["bench"].update(timeout_s=math.inf),
        "inf-min-seconds": lambda d: d["bench"].update(min_seconds=-math.inf),
        "negative-seed": lambda d: d["dataset"].update(seed=-1),
        "huge-seed": lambda d: d["dataset"].update(seed=2**70),
        "huge-runs": lambda d: d["bench"].update(runs=10**30),
        "negative-warmup": lambda d: d["bench"].update(warmup=-5),
        "threads-1-1": lambda d: d["bench"].update(threads=[1, 1]),
        "misspelt-stage-default": lambda d: renamed(d["stage_defaults"], "prune.magnitude", "prune.magnitud"),
        "unknown-dataset": lambda d: d["dataset"].update(name="mnist2"),
        "unknown-format": lambda d: d.update(formats=["tflite", "coreml"]),
        "no-formats": lambda d: d.update(formats=[]),
        "inventory-missing": lambda d: d["lab"].update(inventory="devices/nope.yaml"),
        "inventory-folder-without-yaml": lambda d: d["lab"].update(inventory="profiles"),
        "device-not-in-inventory": lambda d: d["lab"].update(devices=["localhost", "nowhere"]),
        "option-sets-without-default": lambda d: d["bench"]["option_sets"].pop("default"),
        "two-key-step": lambda d: d["recipes"].update(baseline=[{"train": {}, "quantize.int8": {}}]),
        "nan-epochs": lambda d: d["stage_defaults"]["train"].update(epochs=math.nan),
        "negative-epochs": lambda d: d["stage_defaults"]["train"].update(epochs=-1),
        "recipes-a-string": lambda d: d.update(recipes="baseline"),
    }
    targeted += [Mutant(name, config=edited(CONFIG, edit), refused=True) for name, edit in values.items()]
    for where in ("recipes", "option_sets"):
        for name in ODD_NAMES:
            def edit(d, name=name, where=where):
                mapping = d["recipes"] if where == "recipes" else d["bench"]["option_sets"]
                mapping[name] = ["train"] if where == "recipes" else {}
            targeted.append(Mutant(f"{where}-name-{name[:12]!r}", config=edited(CONFIG, edit), refused=True))
    targeted.append(Mutant("lab-device-name-'..'", config=edited(CONFIG, lambda d: d["lab"].update(devices=[".."])),
                           refused=True))
    return targeted + [Mutant(f"random-{i}", config=random_mutant(CONFIG, random.Random(f"config-{i}")))
                       for i in range(12)]


def inventory_mutants() -> list[Mutant]:
    def device(edit):
        return lambda d: edit(d["devices"]["example-board"])

    targeted = [Mutant(f"inventory-{name}", inventory=data, refused=None if name == "cut" else True)
                for name, data in common_cases(INVENTORY, "inventory")]
    twice = "  example-board:\n    transport: local\n    runner: python\n  example-phone:"
    targeted += [Mutant("inventory-duplicate-device", inventory=INVENTORY.replace("  example-phone:", twice).encode(),
                        refused=True)]
    values = {
        "alias": None,
        "nan-timeout": device(lambda e: e.update(timeout_s=math.nan)),
        "inf-connect-timeout": device(lambda e: e["ssh"].update(connect_timeout_s=math.inf)),
        "negative-port": device(lambda e: e["ssh"].update(port=-1)),
        "huge-port": device(lambda e: e["ssh"].update(port=70000)),
        "huge-threads": device(lambda e: e.update(threads=[10**30])),
        "threads-1-1": device(lambda e: e.update(threads=[1, 1])),
        "unknown-transport": device(lambda e: e.update(transport="telnet")),
        "unknown-runner": device(lambda e: e.update(runner="jvm")),
        "old-python-string": device(lambda e: e.update(python="python3")),
        "unknown-probe": device(lambda e: e.update(energy={"probe": "wattmeter"})),
        "unknown-runtime": device(lambda e: e.update(runtimes=["coreml"])),
        "empty-workdir": device(lambda e: e.update(workdir="")),
        "no-devices": lambda d: d.update(devices={}),
        "devices-a-list": lambda d: d.update(devices=["localhost"]),
        "localhost-gone": lambda d: d["devices"].pop("localhost"),
        "a-b-beside-a.b": lambda d: d["devices"].update({"a-b": d["devices"]["localhost"],
                                                        "a.b": d["devices"]["localhost"]}),
    }
    for name, edit in values.items():
        data = shared(INVENTORY, ("devices", "example-board", "ssh"), ("devices", "example-phone", "ssh")) \
            if edit is None else edited(INVENTORY, edit)
        targeted.append(Mutant(f"inventory-{name}", inventory=data, refused=True))
    for name in ODD_NAMES:
        data = edited(INVENTORY, lambda d, name=name: renamed(d["devices"], "example-board", name))
        targeted.append(Mutant(f"inventory-device-name-{name[:12]!r}", inventory=data, refused=True))
    return targeted + [Mutant(f"inventory-random-{i}", inventory=random_mutant(INVENTORY, random.Random(f"inv-{i}")))
                       for i in range(6)]


def random_mutant(text: str, rng: random.Random) -> bytes:
    """One to three random edits of the parsed file: delete, rename or retype a key, or a strange number."""
    doc = yaml.safe_load(text)
    for _ in range(rng.randint(1, 3)):
        paths = list(walk(doc))
        *parent_path, key = rng.choice(paths)
        parent = doc
        for part in parent_path:
            parent = parent[part]
        action = rng.choice(["delete", "rename", "retype", "number"])
        if action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(key, str):
            renamed(parent, key, rng.choice([key + "_", key[:-1] or "x", key.upper()]))
        elif action == "retype":
            parent[key] = copy.deepcopy(rng.choice([v for v in OTHER_VALUES if type(v) is not type(parent[key])]))
        else:
            parent[key] = rng.choice(NUMBERS)
    return dump(doc)


def walk(node, path=()):
    """The path of every key and list item below the root."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*path, key)
        yield from walk(value, (*path, key))


CONFIGS, INVENTORIES = config_mutants(), inventory_mutants()
MUTANTS = CONFIGS + INVENTORIES
SNAKEMAKE = {
    "root-list", "root-scalar", "empty", "latin-1", "junk-bytes", "utf-16", "cut", "alias-bomb", "deep", "python-tag",
    "huge", "duplicate-top-key", "duplicate-nested-key", "alias", "nan-val-fraction",
    "inventory-root-list", "inventory-empty", "inventory-latin-1", "inventory-cut", "inventory-alias-bomb",
    "inventory-deep", "inventory-huge", "inventory-duplicate-device", "inventory-alias", "inventory-nan-timeout",
}


def test_enough_mutants():
    assert len(CONFIGS) >= 50 and len(INVENTORIES) >= 30
    assert len({m.id for m in MUTANTS}) == len(MUTANTS) and SNAKEMAKE <= {m.id for m in MUTANTS}


def limited() -> None:
    """In the child: a memory blow-up fails the command, not the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run(argv: list[str], cwd: Path) -> tuple[bool, str]:
    """(accepted, output) of one command; it must end in time and print no traceback."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, errors="replace",
                          timeout=TIMEOUT_S, preexec_fn=limited)
    output = done.stdout + done.stderr
    assert "Traceback" not in output and not re.search(r'^\s*File "', output, re.M), output[-3000:]
    return done.returncode == 0, output


def one_line(output: str) -> bool:
    return len(re.findall(r"^slimlab: error: ", output, re.M)) == 1


@pytest.fixture
def checkout(tmp_path):
    """A folder like a clone: the workflow linked in, config/config.yaml and devices/lab.yaml its own."""
    for name in ("Snakefile", "workflow", "profiles"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "config").mkdir()
    (tmp_path / "devices").mkdir()
    return tmp_path


def validate(mutant: Mutant, checkout: Path, capsys, monkeypatch) -> tuple[bool, str]:
    """``slimlab validate`` in this process (it is the same code as the CLI's, and 40x faster than a new one)."""
    (checkout / "config/config.yaml").write_bytes(mutant.config)
    (checkout / "devices/lab.yaml").write_bytes(mutant.inventory)
    monkeypatch.chdir(checkout)
    capsys.readouterr()
    accepted = cli.main(["validate", "config/config.yaml"]) == 0
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert accepted or one_line(output), output
    assert not (checkout / "pwned").exists()
    return accepted, output


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_validate_refuses_in_one_line_or_accepts(mutant, checkout, capsys, monkeypatch):
    accepted, output = validate(mutant, checkout, capsys, monkeypatch)
    if mutant.refused is not None:
        assert accepted is not mutant.refused, f"slimlab validate {'accepted' if accepted else 'refused'}: {output}"


@pytest.mark.parametrize("mutant", [m for m in MUTANTS if m.id in SNAKEMAKE], ids=lambda m: m.id)
def test_snakemake_dry_run_agrees_with_validate(mutant, checkout, capsys, monkeypatch):
    accepted, _ = validate(mutant, checkout, capsys, monkeypatch)
    dry_accepted, output = run([sys.executable, "-m", "snakemake", "-n"], checkout)
    assert dry_accepted == accepted, f"snakemake -n {'accepted' if dry_accepted else 'refused'}: {output[-2000:]}"
    snakemakes_own = re.search(r"^WorkflowError in file .*Snakefile\", line \d+:\nConfig file .+$", output, re.M)
    assert dry_accepted or one_line(output) or snakemakes_own, output[-2000:]
    assert not (checkout / "pwned").exists()
