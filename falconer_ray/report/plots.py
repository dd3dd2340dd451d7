"""Small charts for the HTML report, as inline SVG strings.

SVG (not PNG) keeps the report one self-contained, searchable, sharp file; text stays
text (`svg.fonttype: none`) so the charts are a few kilobytes each. Only numbers and
step ids (validated `[a-z0-9_]` names) reach these functions, never document text.
"""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")  # no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator  # noqa: E402

from falconer_ray.progress import duration  # noqa: E402

STYLE = {"svg.fonttype": "none", "svg.hashsalt": "falconer", "font.size": 9, "axes.spines.top": False,
         "axes.spines.right": False}
TEACHER, PROXY, ACCENT = "#c0504d", "#4f81bd", "#9bbb59"


def _plain(v: float, _pos=None) -> str:
    """A tick label as a plain number: "0.0005", "2", "1,000" (never 3x10^0)."""
    return f"{v:,.0f}" if abs(v) >= 1 and float(v).is_integer() else f"{v:g}"


_PLAIN = FuncFormatter(_plain)


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG sits inside HTML
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)


def histogram(scores, threshold: float, title: str, bins: int = 20, xlabel: str = "proxy P(yes)",
              color: str = PROXY, mark: str = "threshold") -> str:
    """Distribution of one label step's P(yes), with the yes/no cut (`mark`) dashed."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 2.4))
        ax.hist(scores, bins=bins, range=(0.0, 1.0), color=color, edgecolor="white")
        ax.axvline(threshold, color=TEACHER if color != TEACHER else PROXY, linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("documents")
        ax.set_title(f"{title} ({mark} {threshold:g}, dashed)")
        return _svg(fig)


def bars(labels: list[str], values: list[float], title: str, unit: str, log: bool = False,
         colors: list[str] | None = None, xlabel: str | None = None) -> str:
    """Horizontal bars with their value printed at the end of each; the x axis is named
    (`xlabel`, else the unit) so a chart read on its own still says what it counts."""
    with plt.rc_context(STYLE):
        return _svg(bars_figure(labels, values, title, unit, log, colors, xlabel))


def bars_figure(labels: list[str], values: list[float], title: str, unit: str, log: bool = False,
                colors: list[str] | None = None, xlabel: str | None = None):
    """The matplotlib figure behind `bars` (call inside `plt.rc_context(STYLE)`)."""
    fig, ax = plt.subplots(figsize=(5.2, 0.5 + 0.45 * len(labels)))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colors or [PROXY] * len(values), height=0.6)
    ax.set_yticks(y, labels)
    top = max(values) if values else 1
    if log:
        ax.set_xscale("log")
        left = min(v for v in values if v > 0) / 3 if any(v > 0 for v in values) else top / 10
        ax.set_xlim(left, top * 8)
        _plain_log_ticks(ax, left, top * 8)
    else:
        ax.set_xlim(right=top * 1.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # few ticks: small dollar amounts are long labels
        ax.xaxis.set_major_formatter(_PLAIN)
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {_fmt(v)} {unit}", va="center")
    ax.set_xlabel((xlabel or unit) + (" (log scale)" if log else ""))
    ax.set_title(title)
    return fig


def stacked_time(rows: dict[str, dict[str, float]], title: str) -> str:
    """One horizontal bar per approach, split into its stages (seconds)."""
    with plt.rc_context(STYLE):
        return _svg(stacked_time_figure(rows, title))


def stacked_time_figure(rows: dict[str, dict[str, float]], title: str):
    """The matplotlib figure behind `stacked_time` (call inside `plt.rc_context(STYLE)`)."""
    fig, ax = plt.subplots(figsize=(5.8, 0.9 + 0.5 * len(rows)))
    palette = [TEACHER, ACCENT, PROXY, "#8064a2", "#f79646"]
    stages = list(dict.fromkeys(s for parts in rows.values() for s in parts))
    y = list(range(len(rows)))[::-1]
    left = [0.0] * len(rows)
    for k, stage in enumerate(stages):
        widths = [parts.get(stage, 0.0) for parts in rows.values()]
        ax.barh(y, widths, left=left, height=0.55, color=palette[k % len(palette)], label=stage)
        left = [a + b for a, b in zip(left, widths)]
    for yi, total in zip(y, left):
        ax.text(total, yi, f" {duration(total)}", va="center")
    ax.set_yticks(y, list(rows))
    ax.set_xlim(right=max(left or [1]) * 1.35)
    ax.set_xlabel("seconds")
    ax.set_title(title)
    # Right of the axes, never over a bar or its total.
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def _plain_log_ticks(ax, lo: float, hi: float) -> None:
    """Log-axis ticks at 1, 2, 5 x 10^k (1, 3 or only 10^k when the range is wide), written as
    plain numbers ("0.5", "20", "1,000"); no minor tick labels to collide."""
    from math import floor, log10

    decades = range(floor(log10(lo)), floor(log10(hi)) + 1)
    for steps in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0 ** k for k in decades for m in steps if lo <= m * 10.0 ** k <= hi]
        if len(ticks) <= 8:
            break
    while len(ticks) > 8:  # many decades: every other one
        ticks = ticks[::2]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(_PLAIN)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
