"""Job start-up against work (issue 17): the default experiment at 1x, 2x and 4x its recipes, timed.

    python bench/scaling.py                     # 1x, 2x and 4x with the zygote, 1x and 2x without
    python bench/scaling.py --scales 1 2 --without 1

Scale k runs config/config.yaml's recipes k times: copy i (from 0) has its `train` step
seeded 42 + i (train's `seed`), so copies share no artifact and k times the recipes are k
times the work and k times the jobs. Each run starts in an empty experiment folder of its
own, so nothing is reused. The bench block is cut to one short record per artifact (one
thread, the default option set, 0.2 s), so the wall time is the train, compress and convert
jobs that the issue is about. Start-up and work per job come from every sidecar's `timing`.
"""

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from compression import machine
from slimlab.artifacts import SIDECAR, read_sidecar

REPO = Path(__file__).resolve().parents[1]
BENCH = {"threads": [1], "warmup": 5, "runs": 20, "min_seconds": 0.2}


def seeded(recipe: list, seed: int) -> list:
    """The recipe with its first step, `train`, given ``seed``."""
    first, *rest = copy.deepcopy(recipe)
    stage, params = (first, {}) if isinstance(first, str) else next(iter(first.items()))
    if stage != "train":
        raise SystemExit(f"bench: recipe {recipe} does not start with train")
    return [{"train": {**params, "seed": seed}}, *rest]


def experiment(root: Path, scale: int) -> int:
    """The experiment folder for ``scale``; its number of recipes."""
    for name in ("Snakefile", "workflow", "profiles", "devices"):
        (root / name).symlink_to(REPO / name)
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    seed = default["dataset"]["seed"]
    recipes = {f"{name}_s{i}" if i else name: seeded(steps, seed + i) if i else steps
               for i in range(scale) for name, steps in default["recipes"].items()}
    config = {**default, "recipes": recipes, "bench": {**default["bench"], **BENCH, "option_sets": {"default": {}}}}
    (root / "config").mkdir()
    (root / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return len(recipes)


def run(scale: int, zygote: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"slimlab-scaling-{scale}x-") as folder:
        root = Path(folder)
        recipes = experiment(root, scale)
        env = {**os.environ, "SLIMLAB_ZYGOTE": "1" if zygote else "0"}
        began = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "lab"], cwd=root, env=env,
                              capture_output=True, text=True)
        wall = time.monotonic() - began
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"bench: the {scale}x run failed")
        timings = [read_sidecar(path).timing or {} for path in (root / "results/artifacts").rglob(SIDECAR)]
        records = list((root / "results/bench").rglob("threads-*.json"))
    startup = sum(t.get("startup_s", 0) for t in timings)
    work = sum(t.get("work_s", 0) for t in timings)
    return {"scale": f"{scale}x", "zygote": "on" if zygote else "off", "recipes": recipes,
            "model jobs": len(timings), "bench jobs": len(records), "wall s": wall,
            "wall s per model job": wall / len(timings), "start-up s (sum)": startup, "work s (sum)": work,
            "start-up share %": 100 * startup / (startup + work)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4], help="with the zygote")
    parser.add_argument("--without", type=int, nargs="*", default=[1, 2], help="scales also run without it")
    args = parser.parse_args()
    rows = [run(scale, zygote=True) for scale in args.scales] + [run(scale, zygote=False) for scale in args.without]
    print(f"\n{machine()}\n")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
