"""The report's plots: matplotlib figures as SVG to inline in the page, plus the PNG the workflow lists.

Every point and bar carries its own hover tooltip, an SVG ``<title>``: it works
offline, without JavaScript. Only the points on a Pareto front are named on the
plot, each placed where it collides with no other name.
"""

import io
import xml.etree.ElementTree as ET
from contextlib import contextmanager

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.font_manager import FontProperties

from slimlab.option_sets import DEFAULT
from slimlab.report.tables import device_figures, pareto_front

SVG_NS, XLINK_NS = "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"
ET.register_namespace("", SVG_NS)
ET.register_namespace("xlink", XLINK_NS)
# Text stays text (the browser draws it; the file stays small), and ids are stable from run to run.
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "slimlab", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}
MARKERS = "osD^vP*X"
BETTER, WORSE = "#2a9d8f", "#e76f51"
# The most names a panel tries to place; the page lists a whole front.
MAX_NAMES = 16
# The step chart's rows at most (about 20 inches); the page's table lists every step.
STEP_CHART_ROWS = 80
# How close to a marker's centre a name may come.
MARKER_RADIUS_PX = 4
# Where a name may go around its point (offset points, right or left of it), nearest first.
NAME_OFFSETS = [(6, 4), (6, -11), (-6, 4), (-6, -11), (6, 14), (-6, 14), (6, -21), (-6, -21), (6, 24), (-6, 24)]
# The trade-off panels: x, y, axis labels, and whether a higher y is better; x is always lower-is-better.
PANELS = [
    ("latency_median_ms", "accuracy_pct", "median latency (ms, log)", "test accuracy (%)", True),
    ("size_bytes", "accuracy_pct", "size on disk (bytes, log)", "test accuracy (%)", True),
    ("latency_median_ms", "peak_rss_mib", "median latency (ms, log)", "peak RSS of the payload (MiB, log)", False),
]


@contextmanager
def figures():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        yield plt


class PlainLogFormatter(matplotlib.ticker.LogFormatterSciNotation):
    """The ticks matplotlib labels on a log axis, written 0.003 rather than 3×10⁻³."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def log_scale(ax, which: str) -> None:
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def name(row) -> str:
    setting = "" if row.option_set == DEFAULT else f" {row.option_set}"
    return f"{row.recipe} ({row.format}{setting}, {int(row.threads)}t)"


def tooltip(row) -> str:
    lines = [f"{row.recipe} · {row.format} · {row.device} · {row.option_set} · {int(row.threads)} threads",
             f"accuracy {100 * row.accuracy:.2f} %", f"median {row.latency_median_ms:.4g} ms (CV {row.latency_cv:.2g})",
             f"size {row.size_bytes:,.0f} B, gzip {row.gzip_bytes:,.0f} B"]
    if pd.notna(row.peak_rss_kib):
        lines.append(f"peak RSS {row.peak_rss_kib / 1024:.1f} MiB")
    if pd.notna(row.speedup_vs_baseline):
        lines.append(f"speed-up vs baseline {row.speedup_vs_baseline:.2f}×, MAC ratio {row.mac_ratio:.2f}")
    lines.append(f"steps: {row.steps}")
    if row.flags:
        lines.append(f"flags: {row.flags}")
    return "\n".join(lines)


def points(rows: pd.DataFrame) -> pd.DataFrame:
    """What the plots show: per recipe, format, device and option set, its fastest thread count (the slower ones have
    the same accuracy and size, so they never reach a front), with accuracy in %, memory in MiB, a name and a
    tooltip. Emulated devices and software GPUs are left out: their latency is not a device's."""
    measured = device_figures(rows)
    fastest = measured.loc[measured.groupby(["recipe", "format", "device", "option_set"])["latency_median_ms"].idxmin()]
    return fastest.assign(accuracy_pct=100 * fastest["accuracy"], peak_rss_mib=fastest["peak_rss_kib"] / 1024,
                          name=[name(row) for row in fastest.itertuples()],
                          tooltip=[tooltip(row) for row in fastest.itertuples()])


def to_svg(fig, tooltips: dict[str, list[str]]) -> str:
    """The figure as an inline ``<svg>`` (and closed); the marks in each group whose id is a key of ``tooltips`` get
    its titles, in the order they were drawn."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=dict.fromkeys(("Creator", "Date", "Format", "Type")))  # no RDF block
    plt.close(fig)
    root = ET.fromstring(buffer.getvalue())
    for group in root.iter(f"{{{SVG_NS}}}g"):
        for mark, title in zip(marks(group), tooltips.get(group.get("id"), [])):
            ET.SubElement(mark, f"{{{SVG_NS}}}title").text = title
    return ET.tostring(root, encoding="unicode")


def marks(element):
    """The drawn shapes under an SVG element (a scatter's markers, a bar), not the shapes they reuse."""
    for child in element:
        if child.tag in (f"{{{SVG_NS}}}use", f"{{{SVG_NS}}}path"):
            yield child
        elif child.tag != f"{{{SVG_NS}}}defs":
            yield from marks(child)


def scatter_series(ax, rows: pd.DataFrame, x: str, y: str, styles: dict, gid: str, tooltips: dict) -> None:
    """One scatter per format and option set (colour by format, marker by set), each point with its tooltip."""
    for n, ((fmt, option_set), group) in enumerate(rows.groupby(["format", "option_set"])):
        color, marker = styles[fmt, option_set]
        ax.scatter(group[x], group[y], s=26, color=color, marker=marker, alpha=0.75, linewidths=0,
                   label=f"{fmt} · {option_set}", gid=f"{gid}-{n}")
        tooltips[f"{gid}-{n}"] = group["tooltip"].tolist()


def styles(rows: pd.DataFrame) -> dict:
    """A stable colour per format and marker per option set, the same in every plot of the page."""
    colors = matplotlib.colormaps["tab10"].colors
    formats, sets = sorted(rows["format"].unique()), sorted(rows["option_set"].unique())
    return {(fmt, option_set): (colors[formats.index(fmt) % 10], MARKERS[sets.index(option_set) % len(MARKERS)])
            for fmt in formats for option_set in sets}


def front_panel(ax, rows: pd.DataFrame, panel: tuple, style: dict, gid: str, tooltips: dict) -> pd.DataFrame:
    """A scatter on log x with its Pareto front drawn; returns the front, in order of x."""
    x, y, xlabel, ylabel, higher_is_better = panel
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    shown = rows.dropna(subset=[x, y])
    if shown.empty:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return shown
    scatter_series(ax, shown, x, y, style, gid, tooltips)
    front = pareto_front(shown, x, y, higher_is_better)
    ax.plot(front[x], front[y], drawstyle="steps-post", color="black", linewidth=1, alpha=0.6, label="Pareto front")
    ax.scatter(front[x], front[y], s=70, facecolors="none", edgecolors="black", linewidths=1, gid=f"{gid}-front")
    tooltips[f"{gid}-front"] = [f"on the Pareto front\n{tip}" for tip in front["tooltip"]]
    log_scale(ax, "x")
    if not higher_is_better:
        log_scale(ax, "y")
    return front


def name_front(ax, rows: pd.DataFrame, front: pd.DataFrame, x: str, y: str, renderer) -> None:
    """Name each front point at the first offset where its name stays inside the axes, overlaps no other name and
    covers no point (failing that, no front point); a name that finds no such place is left out (the page lists
    every front point, and every point has its tooltip). A long front is named at MAX_NAMES points spread along it.

    Each name is laid out once; its candidate places are that box moved, checked against every point at once.
    """
    if len(front) > MAX_NAMES:  # more would not fit: try names spread evenly along the front
        front = front.iloc[np.linspace(0, len(front) - 1, MAX_NAMES).round().astype(int)]
    inside = ax.get_window_extent(renderer)
    scale = ax.figure.dpi / 72  # offset points to pixels
    every = ax.transData.transform(rows[[x, y]].dropna().to_numpy(dtype=float))
    anchors = ax.transData.transform(front[[x, y]].to_numpy(dtype=float))
    placed = np.empty((0, 4))
    for (px, py), point, text in zip(anchors, front[[x, y]].to_numpy(), front["name"]):
        label = ax.annotate(text, point, xytext=(0, 0), textcoords="offset points", fontsize=7.5,
                            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "linewidth": 0})
        box = label.get_window_extent(renderer)
        left, bottom, width, height = box.x0 - px, box.y0 - py, box.width, box.height
        found = None
        for avoid in (every, anchors):
            for dx, dy in NAME_OFFSETS:
                x0 = px + dx * scale + (left if dx > 0 else -left - width)
                y0 = py + dy * scale + bottom
                x1, y1 = x0 + width, y0 + height
                if x0 < inside.x0 or x1 > inside.x1 or y0 < inside.y0 or y1 > inside.y1:
                    continue
                if ((placed[:, 0] < x1) & (placed[:, 2] > x0) & (placed[:, 1] < y1) & (placed[:, 3] > y0)).any():
                    continue
                near = MARKER_RADIUS_PX
                if ((avoid[:, 0] > x0 - near) & (avoid[:, 0] < x1 + near) & (avoid[:, 1] > y0 - near)
                        & (avoid[:, 1] < y1 + near)).any():
                    continue
                found = (dx, dy, (x0, y0, x1, y1))
                break
            if found:
                break
        if found is None:
            label.remove()
            continue
        dx, dy, taken = found
        label.xyann = (dx, dy)
        label.set_horizontalalignment("left" if dx > 0 else "right")
        placed = np.vstack([placed, taken])


def tradeoffs(rows: pd.DataFrame, style: dict, gid: str) -> tuple[str, list[pd.DataFrame]]:
    """One device's accuracy vs latency, accuracy vs size and memory vs latency, each with its front named."""
    with figures() as plt:
        fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 5))
        tooltips = {}
        fronts = [front_panel(ax, rows, panel, style, f"{gid}-{n}", tooltips)
                  for n, (ax, panel) in enumerate(zip(axes, PANELS))]
        layout(fig, left=0.75, right=legend_right(fig, axes), top=0.15)
        renderer = fig.canvas.get_renderer()
        for ax, front, (x, y, *_) in zip(axes, fronts, PANELS):
            name_front(ax, rows, front, x, y, renderer)
        return to_svg(fig, tooltips), fronts


def layout(fig, left: float, right: float, top: float = 0.35, bottom: float = 0.55, gap: float = 0.85,
           vgap: float = 0.9) -> None:
    """Margins and gaps between panels in inches. tight_layout would lay out every tick label once more with
    another renderer: seconds, for a report of thousands of records."""
    width, height = fig.get_size_inches()
    rows, columns = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    panel_width = (width - left - right - gap * (columns - 1)) / columns
    panel_height = (height - top - bottom - vgap * (rows - 1)) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap / panel_width, hspace=vgap / panel_height)


def text_width(fig, texts: list[str], fontsize: float) -> float:
    """The widest of ``texts`` in inches; only the few longest by characters are measured."""
    renderer, font = fig.canvas.get_renderer(), FontProperties(size=fontsize)
    longest = sorted(texts, key=len)[-3:]
    return max((renderer.get_text_width_height_descent(text, font, ismath=False)[0] for text in longest),
               default=0) / fig.dpi


def title(ax, text: str) -> None:
    """Above the panel; Axes.set_title would measure every tick label of the panel to place itself."""
    ax.annotate(text, (0.5, 1), xycoords="axes fraction", xytext=(0, 4), textcoords="offset points", ha="center",
                va="bottom", fontsize=10)


def legend_right(fig, axes) -> float:
    """One legend for every series in ``axes``, right of the last panel (clear of the names on the plots); returns
    the margin it needs, in inches."""
    handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    legend = axes[-1].legend(handles.values(), handles.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi + 0.3


def label_rows(fig, axes, labels: list[str], fontsize: float, **margins) -> None:
    """Rows top to bottom, named on the first panel only (its margin fits the longest name); a faint line per row
    across every panel. Tick objects per row and panel would cost seconds at scale, one line collection per panel
    does not."""
    layout(fig, left=text_width(fig, labels, fontsize) + 0.25, **margins)
    for n, ax in enumerate(axes):
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.grid(False, axis="y")
        ax.hlines(range(len(labels)), 0, 1, transform=ax.get_yaxis_transform(), color="#e4e4e4", linewidth=0.6,
                  zorder=0)
        ax.set_yticks(range(len(labels)) if n == 0 else [], labels if n == 0 else [], fontsize=fontsize)


def dot_plot(rows: pd.DataFrame, value: str, xlabel: str, style: dict, gid: str) -> str:
    """One panel per device: per recipe (lowest first), one marker per format and option set, on log x."""
    shown = rows.dropna(subset=[value])
    order = shown.groupby("recipe")[value].min().sort_values().index
    rank = pd.Series(range(len(order)), index=order)
    devices = sorted(shown["device"].unique())
    with figures() as plt:
        fig, axes = plt.subplots(1, len(devices), squeeze=False,
                                 figsize=(max(9, 3.5 * len(devices) + 3), 1.3 + 0.24 * len(order)))
        tooltips = {}
        for n, (ax, device) in enumerate(zip(axes.flat, devices)):
            on_device = shown[shown["device"] == device]
            scatter_series(ax, on_device.assign(rank=on_device["recipe"].map(rank)), value, "rank", style, f"{gid}-{n}",
                           tooltips)
            log_scale(ax, "x")
            ax.set_xlabel(xlabel)
            title(ax, device)
        label_rows(fig, axes.flat, order.tolist(), 9, right=legend_right(fig, axes.flat), gap=0.3)
        return to_svg(fig, tooltips)


def step_chart(deltas: pd.DataFrame) -> str:
    """Per step after the first: size and gzip'd size ratios, accuracy change and latency ratio, green where it
    bought something and red where it cost. Bars are thick lines, one collection per panel: thousands stay fast."""
    steps = deltas.dropna(subset=["size_ratio"]).head(STEP_CHART_ROWS).reset_index(drop=True)
    labels = [f"{r.recipe}: {r.step}" if len(r.step) < 60 else f"{r.recipe}: {r.step[:57]}…"
              for r in steps.itertuples()]
    tips = [f"{r.recipe}: {r.step} ({r.format})\nsize ×{r.size_ratio:.3g}, gzip ×{r.gzip_ratio:.3g}, "
            f"accuracy {r.accuracy_delta_pt:+.2f} pt, latency " +
            (f"×{r.latency_ratio:.3g} over {r.latency_settings} setting(s)" if pd.notna(r.latency_ratio)
             else "not measured before and after in the same setting") for r in steps.itertuples()]
    bars = [("size_ratio", "size after / before (log)", 1.0, True),
            ("gzip_ratio", "gzip'd size after / before (log)", 1.0, True),
            ("accuracy_delta_pt", "accuracy change (pt)", 0.0, False),
            ("latency_ratio", "latency after / before (log)", 1.0, True)]
    row_in = 0.26
    with figures() as plt:
        fig, axes = plt.subplots(1, len(bars), figsize=(15, 1.4 + row_in * len(steps)))
        tooltips = {}
        for n, (ax, (column, xlabel, neutral, log)) in enumerate(zip(axes, bars)):
            shown = steps[column].dropna()
            good = shown < neutral if log else shown > neutral
            ax.hlines(shown.index, neutral, shown, colors=good.map({True: BETTER, False: WORSE}).tolist(),
                      linewidth=0.6 * row_in * 72, gid=f"steps-{n}")
            tooltips[f"steps-{n}"] = [tips[row] for row in shown.index]
            ax.axvline(neutral, color="black", linewidth=0.8)
            if shown.empty:
                ax.text(0.5, 0.5, "never measured before\nand after in one setting", ha="center", va="center",
                        transform=ax.transAxes)
            elif log:
                log_scale(ax, "x")
            ax.set_xlabel(xlabel)
        label_rows(fig, axes, labels, 8, right=0.2, top=0.15, gap=0.35)
        return to_svg(fig, tooltips)


def accuracy_vs_latency_png(measured: pd.DataFrame) -> bytes:
    """The workflow's PNG: accuracy vs latency per device, log latency, the front named; ``measured`` is
    :func:`points`."""
    devices = sorted(measured["device"].unique()) or ["(nothing measured)"]
    with figures() as plt:
        columns = min(len(devices), 2)
        rows = -(-len(devices) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(7 * columns, 4.8 * rows), squeeze=False)
        style = styles(measured)
        fronts = [front_panel(ax, measured[measured["device"] == device], PANELS[0], style, f"png-{n}", {})
                  for n, (ax, device) in enumerate(zip(axes.flat, devices))]
        for ax, device in zip(axes.flat, devices):
            title(ax, f"{device}: accuracy vs latency (up and left is better)")
        for ax in axes.flat[len(devices):]:
            ax.set_visible(False)
        if len(measured):
            axes.flat[0].legend(fontsize=7)
        layout(fig, left=0.75, right=0.35)
        renderer = fig.canvas.get_renderer()
        for ax, device, front in zip(axes.flat, devices, fronts):
            name_front(ax, measured[measured["device"] == device], front, *PANELS[0][:2], renderer)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
    return buffer.getvalue()
