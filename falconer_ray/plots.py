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

STYLE = {"svg.fonttype": "none", "svg.hashsalt": "falconer", "font.size": 9, "axes.spines.top": False,
         "axes.spines.right": False}
TEACHER, PROXY, ACCENT = "#c0504d", "#4f81bd", "#9bbb59"


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG sits inside HTML
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)


def histogram(scores, threshold: float, title: str, bins: int = 20) -> str:
    """Distribution of one label step's P(yes), with the keep threshold marked."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 2.4))
        ax.hist(scores, bins=bins, range=(0.0, 1.0), color=PROXY, edgecolor="white")
        ax.axvline(threshold, color=TEACHER, linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("proxy P(yes)")
        ax.set_ylabel("documents")
        ax.set_title(f"{title} (threshold {threshold:g}, dashed)")
        return _svg(fig)


def bars(labels: list[str], values: list[float], title: str, unit: str, log: bool = False,
         colors: list[str] | None = None, xlabel: str | None = None) -> str:
    """Horizontal bars with their value printed at the end of each; the x axis is named
    (`xlabel`, else the unit) so a chart read on its own still says what it counts."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.2, 0.5 + 0.45 * len(labels)))
        y = list(range(len(labels)))[::-1]
        ax.barh(y, values, color=colors or [PROXY] * len(values), height=0.6)
        ax.set_yticks(y, labels)
        if log:
            ax.set_xscale("log")
        top = max(values) if values else 1
        ax.set_xlim(right=top * (8 if log else 1.3))
        for yi, v in zip(y, values):
            ax.text(v, yi, f" {_fmt(v)} {unit}", va="center")
        ax.set_xlabel((xlabel or unit) + (" (log scale)" if log else ""))
        ax.set_title(title)
        return _svg(fig)


def stacked_time(rows: dict[str, dict[str, float]], title: str) -> str:
    """One horizontal bar per approach, split into its stages (seconds)."""
    with plt.rc_context(STYLE):
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
            ax.text(total, yi, f" {_duration(total)}", va="center")
        ax.set_yticks(y, list(rows))
        ax.set_xlim(right=max(left or [1]) * 1.35)
        ax.set_xlabel("seconds")
        ax.set_title(title)
        ax.legend(frameon=False, fontsize=8, loc="lower right")
        return _svg(fig)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"
