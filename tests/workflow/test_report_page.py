"""The report of a tiny real run: headless Chromium renders every plot of the page, the numbers match the records,
`snakemake --report report.zip` bundles it, and `slimlab report show` prints it."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from slimlab.records import BenchRecord, load
from tests.support import REPO, lab_unavailable, slimlab

pytestmark = pytest.mark.slow

# Each figure's size, position and drawn marks, written into the page for --dump-dom to return.
PROBE = """<script>
const plots = [...document.querySelectorAll("figure[data-plot]")].map(figure => {
  const svg = figure.querySelector("svg"), box = svg.getBoundingClientRect();
  const drawn = [...svg.querySelectorAll("title")].filter(t => {
    const b = t.parentElement.getBBox(); return b.width > 0 || b.height > 0; });
  return {plot: figure.dataset.plot, x: box.x + scrollX, y: box.y + scrollY, width: box.width, height: box.height,
          titles: svg.querySelectorAll("title").length, drawn: drawn.length};
});
const probe = document.createElement("pre");
probe.id = "probe";
probe.textContent = JSON.stringify({plots, height: document.documentElement.scrollHeight});
document.body.append(probe);
</script>"""
WIDTH = 1400


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/ci", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny run: three recipes in TFLite and MNN (MNN refuses the quantized ones: failures to show),
    timed on this host with and without XNNPACK."""
    root = tmp_path_factory.mktemp("report")
    for name in ("Snakefile", "workflow", "plugins", "profiles", "devices"):
        (root / name).symlink_to(REPO / name)
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg.update(dataset={"name": "digits"}, formats=["tflite", "mnn"], recipes={
        "baseline": ["train"], "int8": ["train", "quantize.int8"],
        "pruned_int8": ["train", {"prune.magnitude": {"sparsity": 0.5}}, "quantize.int8"]})
    cfg["bench"]["option_sets"] = {"default": {}, "no-xnnpack": {"tflite": {"xnnpack": False}}}
    (root / "config").mkdir()
    (root / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    done = snakemake(root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    found = shutil.which("chromium")
    if found is None:
        lab_unavailable("chromium not installed (apt-get install chromium)")
    return subprocess.run([found, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120, check=True)


def test_every_plot_renders_in_headless_chromium(run, tmp_path):
    page = run / "results/report/summary.html"
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=5000", f"--window-size={WIDTH},1000", "--dump-dom", probed.as_uri(),
                   profile=tmp_path / "profile").stdout
    found = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)[1]))
    plots = {plot["plot"]: plot for plot in found["plots"]}
    # The device's trade-offs (3 panels), latency per format and option set, what each step bought; no energy probe.
    assert set(plots) == {"localhost: trade-offs", "latency", "steps"}
    for plot in plots.values():
        assert plot["width"] > 600 and plot["height"] > 120, plot
        # Marks with a tooltip take room on the page (a bar for a step that changed nothing has no length).
        assert plot["drawn"] >= 3 and plot["drawn"] >= 0.5 * plot["titles"], plot

    shot = tmp_path / "summary.png"
    chromium(f"--window-size={WIDTH},{found['height']}", f"--screenshot={shot}", page.as_uri(),
             profile=tmp_path / "profile")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    print(f"screenshot: {shot}")
    for name, plot in plots.items():
        x, y = int(plot["x"]), int(plot["y"])
        region = pixels[y:y + int(plot["height"]), x:x + int(plot["width"])]
        inked = (region.sum(axis=2) < 600).mean()  # anything darker than near-white
        colours = len(np.unique(region.reshape(-1, 3) // 32, axis=0))
        assert 0.01 < inked < 0.6 and colours >= 8, (name, inked, colours)


def test_the_report_numbers_are_the_records_numbers(run):
    summary = pd.read_csv(run / "results/report/summary.csv")
    page = (run / "results/report/summary.html").read_text()
    measured = summary[summary["status"] == "ok"].set_index("record")
    records = {path: load(BenchRecord, path, "bench record") for path in (run / "results/bench").rglob("threads-*.json")
               if not path.name.endswith(".failed.json")}
    timed = {path: record for path, record in records.items() if record.status == "ok"}
    # 3 TFLite models with and without XNNPACK, and the baseline's MNN model (MNN refuses quantized models).
    assert len(timed) == len(measured) == 7
    for path, record in timed.items():
        row = measured.loc[str(path.relative_to(run))]
        assert (row["device"], row["option_set"], row["threads"]) == (record.device, record.option_set,
                                                                      record.threads)
        assert row["latency_median_ms"] == record.latency.median_ms
        assert row["latency_cv"] == record.latency.cv and row["runs"] == record.latency.n
        assert row["peak_rss_kib"] == record.memory["peak_rss_kib"]
        assert json.loads(row["options"]) == record.options.reported
        assert f"<td>{record.latency.median_ms:.4g}</td>" in page
    baseline = measured[(measured["recipe"] == "baseline") & (measured["format"] == "tflite")]
    assert (baseline["speedup_vs_baseline"] == 1.0).all()
    # MNN's known refusal of int8 TFLite is a limit, not a failure: listed apart, with its reason.
    refused = summary[(summary["status"] == "unsupported") & (summary["format"] == "mnn")]
    assert set(refused["recipe"]) == {"int8", "pruned_int8"} and refused["error"].str.contains("MNN 3.6.1").all()
    assert not (summary["status"] == "convert_failed").any()


def test_snakemake_report_zip_bundles_the_summary(run):
    done = snakemake(run, "--report", "report.zip")
    assert done.returncode == 0, done.stderr[-3000:]
    names = zipfile.ZipFile(run / "report.zip").namelist()
    for wanted in ("summary.html", "summary.csv", "fastest.csv", "accuracy_vs_latency.png"):
        assert any(name.endswith(f"/{wanted}") for name in names), (wanted, names)
    assert any(name.endswith("/report.html") for name in names)


def test_report_show_prints_the_run(run):
    done = slimlab("report", "show", "--format", "tflite", "--sort", "latency_median_ms", cwd=run,
                   env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "results/report/summary.parquet: 6 rows" in done.stdout
    assert all(recipe in done.stdout for recipe in ("baseline", "int8", "pruned_int8"))
