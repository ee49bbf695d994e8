"""``summary.html``: one self-contained page (inline SVG and CSS, no script, no network)."""

import html

import pandas as pd

import slimlab.report.plots as plots
from slimlab.report.tables import SPEEDUP_BELOW_MACS, number_format, with_quality

STEP_CAPTION = ("Each step of each recipe against the artifact it took: size and gzip'd size ratios, the change in "
                "test accuracy, and the latency ratio (the geometric mean over the devices, option sets and thread "
                "counts where both were measured; blank where they never were, e.g. a Keras model). Green bought "
                "something, red cost. A step shared by recipes is shown once, under the first.")
TRADEOFFS = ("Accuracy vs median latency, accuracy vs size on disk, and the payload's peak memory vs latency, on log "
             "axes, each setting at its fastest thread count. Colour: format; marker: option set. The black staircase "
             "is the Pareto front (no other point is better on both axes): its points are ringed and named where a name "
             "fits, and listed below.")

# A front of more points than this is folded under its one-line summary.
FRONT_OPEN = 12
FAILED = ["recipe", "format", "device", "option_set", "threads", "status", "steps", "error"]
# The page's table of every measurement; summary.csv and summary.parquet hold every column.
MEASUREMENTS = ["recipe", "format", "device", "emulated", "option_set", "threads", "status", "steps", "size_bytes",
                "gzip_bytes", "macs", "accuracy", "parity_agreement", "device_accuracy", "device_agreement",
                "latency_median_ms", "latency_p90_ms", "latency_cv", "speedup_vs_baseline", "mac_ratio", "peak_rss_kib",
                "energy_j_per_inference", "flags", "error"]
# A device's own run of the test samples against the host's run of the same file.
DEVICE_EVAL = ["recipe", "format", "device", "emulated", "option_set", "threads", "accuracy", "device_accuracy",
               "device_agreement", "device_max_abs_diff_rel", "device_parity_failed"]
STEPS = ["recipe", "step", "format", "size_bytes", "size_ratio", "gzip_ratio", "accuracy", "accuracy_delta_pt",
         "latency_ratio", "latency_settings"]
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1600px}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}td{max-width:30em;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure svg{max-width:100%;height:auto;display:block}
figcaption,.note{color:#555;font-size:13px;max-width:70em}
nav a{margin-right:1em}.front{font-size:13px;margin:.3em 0;max-width:90em}"""


def html_table(table: pd.DataFrame, table_id: str) -> str:
    """Whole numbers with thousands separators, others to 4 significant digits; numbers right-aligned."""
    formats = [number_format(table.iloc[:, n]) for n in range(table.shape[1])]
    formatters = {column: text for column, text in zip(table.columns, formats) if text}
    numeric = [n for n, text in enumerate(formats) if text]
    align = ",".join(f"#{table_id} td:nth-child({n + 1})" for n in numeric)
    style = f"<style>{align}{{text-align:right}}</style>" if numeric else ""
    return style + table.to_html(index=False, formatters=formatters, na_rep="", border=0, table_id=table_id)


def figure(svg: str, caption: str, slot: str) -> str:
    return f'<figure data-plot="{html.escape(slot)}">{svg}<figcaption>{caption}</figcaption></figure>'


def value_text(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def front_text(front: pd.DataFrame, x: str, y: str) -> str:
    return " → ".join(f"<b>{html.escape(row['name'])}</b> ({value_text(row[x])}, {value_text(row[y])})"
                      for _, row in front.iterrows())


def device_section(device: str, rows: pd.DataFrame, style: dict) -> str:
    svg, fronts = plots.tradeoffs(rows, style, f"d-{device}")
    # A long front is folded away; a short one is open.
    fronts_html = "".join(
        f'<details class="front"{" open" if len(front) <= FRONT_OPEN else ""}><summary>{html.escape(ylabel)} vs '
        f"{html.escape(xlabel)}: {len(front)} point(s) on the front</summary>{front_text(front, x, y)}</details>"
        for front, (x, y, xlabel, ylabel, _) in zip(fronts, plots.PANELS))
    return f"""<section id="device-{html.escape(device)}"><h2>{html.escape(device)}</h2>
{figure(svg, TRADEOFFS, f"{device}: trade-offs")}
<p class="front">Its Pareto fronts, left to right (x, y):</p>{fronts_html}</section>"""


def energy_section(measured: pd.DataFrame, table: pd.DataFrame, style: dict) -> str:
    with_energy = measured.dropna(subset=["energy_j_per_inference"])
    if with_energy.empty:
        reasons = table["energy_reason"].dropna().unique()[:5]
        why = "; ".join(html.escape(reason) for reason in reasons) or "no record carries an energy measurement"
        return f'<p class="note">No record measured energy ({why}). A device\'s <code>energy</code> block names ' \
               f'its probe (README, Energy).</p>'
    return figure(plots.dot_plot(with_energy, "energy_j_per_inference", "energy per inference (J, log, net of idle)",
                                 style, "energy"),
                  "Energy per inference per format and option set, at its fastest thread count, on each device that "
                  "measured it.", "energy")


def device_eval_section(table: pd.DataFrame) -> str:
    evaluated = table.dropna(subset=["device_accuracy"])
    emulated = sorted(table.dropna(subset=["emulated"])["device"].unique())
    note = (f'<p class="note">Emulated: {html.escape(", ".join(emulated))}. These devices show what ran and with what '
            "output; their latencies stay in the tables but are never plotted, ranked in the fastest settings, or "
            "compared with a baseline.</p>") if emulated else ""
    software = table[table["flags"].fillna("").str.split(",").map(lambda flags: "software_gpu" in flags)]
    settings = sorted({f"{row.device} ({row.option_set})" for row in software.itertuples()})
    note += (f'<p class="note">Software GPU: {html.escape(", ".join(settings))}. A software Vulkan driver (Mesa\'s '
             "lavapipe) ran these on the CPU: likewise never plotted, ranked or compared (flag "
             "<code>software_gpu</code>).</p>") if settings else ""
    if evaluated.empty:
        return note + '<p class="note">No record carries a device\'s own evaluation (<code>python: {evaluate: N}' \
                      '</code> in a device\'s entry turns it on).</p>'
    failed = int(evaluated["device_parity_failed"].astype(bool).sum())
    return note + f'''<p class="note">Each device ran the first test samples through the deployed file and compared
its logits with the host's run of the same file: accuracy, top-1 agreement, and the largest logit difference relative
to the host's logit range. {failed} row(s) miss the parity bar (<code>device_parity_failed</code>: agreement, or
accuracy against the host's on the same samples, below the conversion parity bound).</p>
{html_table(evaluated[DEVICE_EVAL], "device-eval-table")}'''


def render(table: pd.DataFrame, measured: pd.DataFrame, best: pd.DataFrame, deltas: pd.DataFrame,
           reference: str) -> str:
    """The page; ``measured`` is :func:`plots.points` of ``table``."""
    style = plots.styles(measured)
    devices = sorted(measured["device"].unique())
    failed = table[table["status"] != "ok"]
    statuses = ", ".join(f"{count} {status}" for status, count in table["status"].value_counts().items())
    flagged = table["flags"].fillna("").str.contains("speedup_below_macs").sum()
    steps = deltas.dropna(subset=["size_ratio"])
    nav = "".join(f'<a href="#{target}">{html.escape(text)}</a>' for target, text in [
        *((f"device-{d}", d) for d in devices), ("latency", "latency per format"), ("energy", "energy"),
        ("steps", "what each step bought"), ("device-eval", "accuracy on the devices"), ("fastest", "fastest setting"),
        ("failures", "failures"),
        ("all", "every measurement")])
    latency = figure(plots.dot_plot(measured, "latency_median_ms", "median latency (ms, log)", style, "latency"),
                     "Each recipe's median latency per format and option set, at its fastest thread count (hover "
                     "for it), one panel per device. Fastest recipe first.", "latency") if devices else ""
    chart = figure(plots.step_chart(deltas), STEP_CAPTION + (
        f" The chart shows the first {plots.STEP_CHART_ROWS} of {len(steps)} steps; the table below has them all."
        if len(steps) > plots.STEP_CHART_ROWS else ""), "steps") if len(steps) else \
        '<p class="note">No recipe has more than one step.</p>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slimlab report</title><style>{CSS}</style></head>
<body><h1>slimlab report</h1>
<p>{len(table)} rows ({statuses}): every recipe × format × device × option set × thread count. Accuracy is measured
on the test split in the deployed format; latency is the median of the timed runs on the device. Speed-ups and MAC ratios
are against the <code>{html.escape(reference)}</code> recipe in the same format, device, option set and thread count;
{flagged} row(s) are flagged <code>speedup_below_macs</code> (a speed-up below {SPEEDUP_BELOW_MACS}× the MAC ratio).
The plots show each setting at its fastest thread count. Hover any point or bar for its details.</p>
<nav>{nav}</nav>
{"".join(device_section(device, measured[measured["device"] == device], style) for device in devices)
 or '<p class="note">Nothing was measured.</p>'}
<section id="latency"><h2>Latency per format and option set</h2>{latency}</section>
<section id="energy"><h2>Energy per inference</h2>{energy_section(measured, table, style)}</section>
<section id="steps"><h2>What each step bought</h2>{chart}
<details><summary>As a table (first steps included)</summary>{html_table(deltas[STEPS], "steps-table")}</details>
</section>
<section id="device-eval"><h2>Accuracy on the devices</h2>{device_eval_section(table)}</section>
<section id="fastest"><h2>Fastest setting per artifact and device</h2>
<p class="note">For each recipe, format and device: the option set and thread count with the lowest median latency, and
its speed-up over the fastest thread count with the <code>default</code> options.</p>
{html_table(best, "fastest-table")}</section>
<section id="failures"><h2>Failures</h2>
{html_table(failed[FAILED], "failures-table") if len(failed) else
 '<p class="note">None: every deployable was built and measured.</p>'}
</section>
<section id="all"><h2>Every measurement</h2>
<p class="note">summary.csv and summary.parquet hold every column, including each step's params, the options the
runtime reported, and the record each row comes from.</p>
{html_table(table[with_quality(MEASUREMENTS, table)], "all-table")}</section>
</body></html>
"""
