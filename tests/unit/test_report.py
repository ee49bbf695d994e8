"""The report from typed sidecars and records: tables, speed-ups against the baseline, what each step bought,
Pareto fronts, the offline page, and `slimlab report show`."""

import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from slimlab import report
from slimlab.errors import SlimlabError
from slimlab.artifacts import read_sidecar
from slimlab.records import (BenchFailure, BenchRecord, DeviceEval, Emulation, Energy, Latency, ParamCount, Sidecar,
                             Size, Step)
from slimlab.report import plots, tables, terminal
from tests.support import DIGITS, REPO, slimlab


def measurement(device, option_set, threads, median_ms, **extra):
    return {"recipe": "int8", "format": "tflite", "device": device, "option_set": option_set, "threads": threads,
            "options": "{}", "latency_median_ms": median_ms, "latency_cv": 0.01, "runtime": "ai_edge_litert 2.3.0",
            "accuracy": 0.9, "size_bytes": 1000, "status": "ok", **extra}


def test_fastest_picks_the_lowest_median_over_threads_and_option_sets():
    table = pd.DataFrame([
        measurement("board", "default", 1, 4.0),
        measurement("board", "default", 2, 3.0),
        measurement("board", "no-xnnpack", 1, 9.0),
        measurement("board", "no-xnnpack", 2, 1.5),
        measurement("phone", "default", 1, 2.0),
        measurement("phone", "no-xnnpack", 1, 6.0),
        # A record that could not be measured is not a candidate.
        {"recipe": "int8", "format": "tflite", "device": "phone", "option_set": "fast", "status": "skipped"},
    ])
    best = report.fastest(table).set_index("device")
    assert list(best.columns) == [c for c in report.FASTEST_COLUMNS if c != "device"]
    assert best.loc["board", ["option_set", "threads", "latency_median_ms"]].tolist() == ["no-xnnpack", 2, 1.5]
    assert best.loc["board", "speedup_vs_default"] == 2.0  # over default's fastest thread count, 3.0 ms
    assert best.loc["phone", ["option_set", "threads", "speedup_vs_default"]].tolist() == ["default", 1, 1.0]


def test_fastest_is_empty_when_nothing_was_measured():
    table = pd.DataFrame([{"recipe": "int8", "format": "ncnn", "status": "unsupported", "error": "no"}])
    best = report.fastest(table)
    assert best.empty and list(best.columns) == report.FASTEST_COLUMNS


class Lab:
    """Typed sidecars and records in a folder: a train step, then steps on top of it, timed on devices."""

    def __init__(self, root):
        self.root, self.deployables = root, []

    def artifact(self, name: str, parent: Sidecar | None, stage: str, fmt: str, size: int, macs: int | None,
                 accuracy: float, **params) -> Sidecar:
        folder = self.root / name
        folder.mkdir(parents=True)
        lineage = [*(parent.lineage if parent else []), Step(stage=stage, params=params, changed=params,
                                                               artifact=str(folder))]
        info = Sidecar(format=fmt, lineage=lineage, dataset=DIGITS, size=Size(bytes=size, gzip_bytes=size // 2),
                       params=ParamCount(count=size // 4, nonzero=size // 8), zero_fraction=0.5,
                       macs={"total": macs} if macs else None, accuracy={"val": accuracy, "test": accuracy})
        info.save(folder / "artifact.json")
        return info

    def deploy(self, recipe: str, info: Sidecar, timings: dict, **record) -> None:
        """``timings``: {(device, option set, threads): median ms, or a failure reason}; ``record``: more fields of
        each record."""
        folder = info.lineage[-1].artifact
        records = []
        for (device, option_set, threads), timed in timings.items():
            path = self.root / "bench" / device / recipe / option_set / f"threads-{threads}.json"
            target = dict(device=device, transport="local", runner="python", host="h", artifact=folder,
                          format=info.format, option_set=option_set, threads=threads, settings={"runs": 3})
            if isinstance(timed, str):
                BenchFailure(**target, tag="offline", reason=timed).save(path.with_name(f"{path.stem}.failed.json"))
            else:
                BenchRecord(**target, runtime="rt 1", latency=Latency(n=3, median_ms=timed, min_ms=timed, max_ms=timed,
                                                                      mean_ms=timed, cv=0.01),
                            memory={"peak_rss_kib": 50_000, "load_growth_kib": 300, "runtime_mb": 1.5},
                            energy=Energy(probe="none", reason="no probe here"), **record).save(path)
            records.append(str(path))
        self.deployables.append({"recipe": recipe, "format": info.format,
                                 "sidecar": f"{folder}/artifact.json", "records": records})


@pytest.fixture
def lab(tmp_path) -> Lab:
    """baseline, int8 (same MACs, 2× faster) and pruned (4× fewer MACs, only 2× faster) on a board; a phone
    that measured no baseline; one record whose device was offline; a format that cannot take the model."""
    lab = Lab(tmp_path)
    train = lab.artifact("train", None, "train", "keras", 4000, 1000, 0.95, epochs=1)
    baseline = lab.artifact("fp32", train, "convert.tflite", "tflite", 2000, 1000, 0.95)
    int8 = lab.artifact("int8", train, "quantize.int8", "tflite", 500, 1000, 0.94)
    pruned = lab.artifact("pruned", train, "prune.structured", "keras", 1000, 250, 0.93, fraction=0.5)
    pruned_int8 = lab.artifact("pruned_int8", pruned, "quantize.int8", "tflite", 250, 250, 0.92)
    lab.deploy("baseline", baseline, {("board", "default", 1): 2.0, ("board", "default", 2): 1.0})
    lab.deploy("int8", int8, {("board", "default", 1): 1.0, ("board", "default", 2): 0.25,
                              ("phone", "default", 1): 0.5, ("board", "no-xnnpack", 1): "board went away"})
    lab.deploy("pruned_int8", pruned_int8, {("board", "default", 1): 1.0})
    lab.deployables.append({"recipe": "pruned_int8", "format": "ncnn", "unsupported": "convert.ncnn takes keras"})
    return lab


def test_speedup_and_mac_ratio_are_against_the_baseline_in_the_same_setting(lab):
    table = tables.rows(lab.deployables).set_index(["recipe", "device", "option_set", "threads"])
    int8, pruned = table.loc[("int8", "board", "default", 1)], table.loc[("pruned_int8", "board", "default", 1)]
    assert (int8["speedup_vs_baseline"], int8["mac_ratio"]) == (2.0, 1.0)
    assert table.loc[("int8", "board", "default", 2), "speedup_vs_baseline"] == 4.0  # 2 threads vs 2 threads
    assert (pruned["speedup_vs_baseline"], pruned["mac_ratio"]) == (2.0, 4.0)
    # 2× faster for 4× fewer MACs is below 0.6 × 4: flagged; int8's 2× for the same MACs is not.
    assert pruned["flags"] == "speedup_below_macs" and not int8["flags"]
    # No baseline was measured on the phone: nothing to compare with.
    assert pd.isna(table.loc[("int8", "phone", "default", 1), "speedup_vs_baseline"])
    other = tables.rows(lab.deployables, reference="int8").set_index(["recipe", "device", "option_set", "threads"])
    assert other.loc[("pruned_int8", "board", "default", 1), "speedup_vs_baseline"] == 1.0


def test_every_row_carries_its_params_memory_energy_and_failures_with_reasons(lab):
    table = tables.rows(lab.deployables)
    assert list(table.columns) == list(tables.COLUMNS)
    ok = table[table["status"] == "ok"].set_index(["recipe", "device", "threads"])
    row = ok.loc[("pruned_int8", "board", 1)]
    assert row["steps"] == "train(epochs=1) → prune.structured(fraction=0.5) → quantize.int8"
    assert '{"prune.structured": {"fraction": 0.5}}' in row["step_params"]
    assert (row["peak_rss_kib"], row["load_rss_growth_kib"], row["runtime_memory_mb"]) == (50_000, 300, 1.5)
    assert row["energy_reason"] == "no probe here" and pd.isna(row["energy_j_per_inference"])
    failed = table[table["status"] != "ok"].set_index(["recipe", "format"])["error"]
    assert failed[("int8", "tflite")] == "offline: board went away"
    assert failed[("pruned_int8", "ncnn")] == "convert.ncnn takes keras"


def test_each_step_shows_what_it_bought_once(lab):
    deltas = tables.step_deltas(tables.rows(lab.deployables))
    assert deltas["artifact"].is_unique  # train is shared by every recipe: listed once
    steps = deltas.set_index(["recipe", "step"])
    assert steps.loc[("baseline", "train(epochs=1)"), ["size_bytes", "accuracy"]].tolist() == [4000, 0.95]
    prune = steps.loc[("pruned_int8", "prune.structured(fraction=0.5)")]
    assert prune["size_ratio"] == 0.25 and prune["accuracy_delta_pt"] == pytest.approx(-2.0)
    assert pd.isna(prune["latency_ratio"]) and prune["latency_settings"] == 0  # a Keras model is never timed
    assert steps.loc[("pruned_int8", "quantize.int8"), "gzip_ratio"] == 0.25


def test_an_emulated_device_shows_what_ran_and_its_accuracy_but_never_how_fast(lab, tmp_path):
    baseline = lab.deployables[0]
    evaluation = {"samples": 100, "accuracy": 0.9, "host_accuracy": 0.95, "agreement": 0.93, "max_abs_diff_rel": 0.01,
                  "outputs": {"logits": {"snr_db": 20.0, "cosine": 0.99, "max_abs_diff_rel": 0.01}}, "bounds": {},
                  "passed": False}
    lab.deploy("baseline", read_sidecar(baseline["sidecar"]), {("emu", "default", 1): 0.01},
               emulated=Emulation(qemu_cpu="max,sme=off"), device_eval=DeviceEval(**evaluation))
    table = report.write(lab.deployables, tmp_path / "out")
    emu = table[table["device"] == "emu"].iloc[0]
    assert emu["emulated"] == "max,sme=off" and emu["latency_median_ms"] == 0.01  # shown, labelled
    assert (emu["device_accuracy"], emu["device_agreement"], emu["device_parity_failed"]) == (0.9, 0.93, True)
    assert pd.isna(emu["speedup_vs_baseline"])
    # The fastest emulated 0.01 ms would win everything: it is in no ranking, plot or front.
    assert "emu" not in set(report.fastest(table)["device"]) and "emu" not in set(plots.points(table)["device"])
    assert set(table[table["device"] != "emu"]["emulated"].dropna()) == set()
    page = (tmp_path / "out/summary.html").read_text()
    assert "Emulated: emu." in page and "1 row(s) miss the parity bar" in page


def test_pareto_front_keeps_what_nothing_beats_on_both_axes():
    points = pd.DataFrame({"latency": [1.0, 2.0, 2.0, 3.0, 0.5, 4.0], "accuracy": [90, 95, 93, 94, 80, 99]})
    front = tables.pareto_front(points, "latency", "accuracy", higher_y_is_better=True)
    assert front.index.tolist() == [4, 0, 1, 5]
    memory = tables.pareto_front(points.assign(mib=[5, 3, 4, 1, 9, 1]), "latency", "mib", higher_y_is_better=False)
    assert memory.index.tolist() == [4, 0, 1, 3]


def test_names_on_a_crowded_front_never_collide():
    xs = np.geomspace(0.01, 10, 60)
    rows = pd.DataFrame({"latency_median_ms": xs, "accuracy_pct": 80 + 5 * np.log10(xs * 100),
                         "name": [f"recipe_{n:02d} (tflite, 4t)" for n in range(60)]})
    with plots.figures() as plt:
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(rows["latency_median_ms"], rows["accuracy_pct"])
        ax.set_xscale("log")
        renderer = fig.canvas.get_renderer()
        plots.name_front(ax, rows, rows, "latency_median_ms", "accuracy_pct", renderer)
        boxes = [text.get_window_extent(renderer) for text in ax.texts]
        inside = ax.get_window_extent(renderer)
        plt.close(fig)
    assert 3 <= len(boxes) <= plots.MAX_NAMES
    assert not any(a.overlaps(b) for n, a in enumerate(boxes) for b in boxes[n + 1:])
    assert all(inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1) for box in boxes)


def test_every_point_and_bar_gets_its_tooltip():
    with plots.figures() as plt:
        fig, ax = plt.subplots()
        ax.scatter([1, 2, 3], [3, 1, 2], gid="dots")
        ax.hlines([0, 1], 0, [2, 3], gid="bars")
        svg = plots.to_svg(fig, {"dots": ["a", "b", "c"], "bars": ["d", "e"]})
        plt.close(fig)
    titles = [t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}title")]
    assert titles == ["a", "b", "c", "d", "e"]


def test_the_page_works_offline_and_names_every_front(lab, tmp_path):
    table = report.write(lab.deployables, tmp_path / "out")
    page = (tmp_path / "out/summary.html").read_text()
    assert not re.search(r"<script|<link|<img|src=|https?://(?!www\.w3\.org/)", page)  # nothing to fetch
    # The board's and the phone's trade-offs, latency per format, what each step bought.
    assert page.count("<svg") == 4
    assert page.count("<title>") >= len(plots.points(table)) + 4
    assert "<b>pruned_int8 (tflite, 1t)</b>" in page and "No record measured energy (no probe here)" in page
    assert (tmp_path / "out/accuracy_vs_latency.png").read_bytes()[:4] == b"\x89PNG"
    written = pd.read_parquet(tmp_path / "out/summary.parquet")
    assert written.shape == table.shape and "speedup_below_macs" in set(written["flags"])


def test_report_show_filters_sorts_and_picks_columns(lab, tmp_path):
    report.write(lab.deployables, tmp_path)
    summary = tmp_path / "summary.parquet"
    done = slimlab("report", "show", "--summary", str(summary), "--device", "board", "--sort", "latency_median_ms",
                   "--columns", "recipe,threads", "latency_median_ms", env={"COLUMNS": "120"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines[[n for n, line in enumerate(lines) if "───" in line][0] + 1:]]
    assert rows[:2] == [["int8", "2", "0.25"], ["baseline", "2", "1"]]
    table = terminal.select(pd.read_parquet(summary), {"recipe": ["int8"], "format": ["tflite"]}, "threads", True,
                            ["threads"])
    assert table["threads"].iloc[0] == 2


@pytest.mark.parametrize("args, message", [
    (["--device", "toaster"], "no device 'toaster' in the summary; it has board, phone"),
    (["--sort", "speed"], "no column 'speed' in the summary; columns: recipe, format"),
    (["--columns", "recipe", "colour"], "no column 'colour' in the summary"),
])
def test_report_show_refuses_unknown_values_in_one_line(lab, tmp_path, args, message):
    report.write(lab.deployables, tmp_path)
    done = slimlab("report", "show", "--summary", str(tmp_path / "summary.parquet"), *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"slimlab: error: {message}") and done.stderr.count("\n") == 1


def test_report_show_without_a_summary_says_what_to_do(tmp_path):
    with pytest.raises(SlimlabError, match="no summary here; run the workflow"):
        terminal.read_summary(tmp_path / "summary.parquet")


@pytest.mark.slow
def test_the_scale_benchmark_runs(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench/report.py"), "--records", "300", "--keep", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("| 300 records (4 recipes") and "`report.write`" in done.stdout
    assert (tmp_path / "report/summary.html").is_file() and (tmp_path / "report-cli/summary.html").is_file()
