"""``aseda plot``: a profiler's JSON-lines file as PNG panels over time, like Sandstorm's graphs.

One panel per metric, one line per stage, and a strip under them naming the bottleneck of each
sample. Needs matplotlib (``pip install aseda[plot]``); draws with the Agg backend and leaves
pyplot's global state alone.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._profiler import read_profile

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["METRICS", "plot_profile"]

#: the panels: (title, unit, how to read one stage's value from its sample record)
METRICS: tuple[tuple[str, str, str], ...] = (
    ("Queue length", "events", "queue_length"),
    ("Workers", "workers", "workers"),
    ("Rate in (admitted)", "events/s", "rate_in"),
    ("Rate out (processed)", "events/s", "rate_out"),
    ("Response time, 90th percentile (last 1-2 s)", "ms", "recent_response_p90"),
    ("Refused and shed", "events/s", "refused_rate"),
)

_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def plot_profile(path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> str:
    """Draw a profiler file as a PNG of panels over time and return the PNG's path.

    Panels: queue length, workers (with the profiler's recorded decisions marked), rate in,
    rate out, 90th-percentile response time and refused + shed events per second; x is
    seconds since the profiler started, one line per stage. A strip at the bottom shows which
    stage was the bottleneck at each sample.

    Args:
        path: the JSON-lines file written by :class:`aseda.Profiler`.
        output: the PNG to write; by default ``path`` with a ``.png`` suffix.

    Returns:
        The path written.

    Raises:
        ImportError: matplotlib is not installed (``pip install aseda[plot]``).
        ValueError: the file holds no sample, or a line that is not JSON.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ImportError(
            "aseda plot needs matplotlib: pip install aseda[plot] (or pip install matplotlib)"
        ) from None
    samples = read_profile(path)
    if not samples:
        raise ValueError(f"{path}: no samples to plot")
    target = Path(output) if output is not None else Path(path).with_suffix(".png")

    try:
        times = [float(s["t"]) for s in samples]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: not a profiler file (a line has no time 't')") from None
    stages: list[str] = []
    for s in samples:
        for name in s.get("stages", {}):
            if name not in stages:
                stages.append(name)
    color = {name: _COLORS[i % len(_COLORS)] for i, name in enumerate(stages)}

    fig = Figure(figsize=(13, 10.5), dpi=100, layout="constrained")
    grid = fig.add_gridspec(4, 2, height_ratios=[1, 1, 1, 0.22])
    panels: list[Axes] = []
    for i, (title, unit, key) in enumerate(METRICS):
        ax = fig.add_subplot(grid[i // 2, i % 2], sharex=panels[0] if panels else None)
        panels.append(ax)
        scale = 1000.0 if unit == "ms" else 1.0
        seen = False
        for name in stages:
            xs, values = times, [_value(s, name, key) * scale for s in samples]
            seen = seen or any(not math.isnan(v) for v in values)
            # A rate is an average over the interval before its sample, and a pool is resized
            # somewhere in that interval: draw both as steps up to their sample, the first
            # from the profiler's start.
            style = "steps-pre" if unit == "events/s" or key == "workers" else None
            if style is not None and times[0] > 0:
                xs, values = [0.0, *times], [values[0], *values]
            ax.plot(
                xs,
                values,
                color=color[name],
                lw=1.6,
                label=name,
                drawstyle=style,
                marker="o" if len(samples) < 3 else None,  # a lone sample is still seen
                markersize=4,
            )
        if not seen:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
        ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
        ax.set_ylabel(unit)
        ax.set_ylim(bottom=0)
        ax.grid(True, color="#e0e0e0", lw=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if key == "workers":
            _mark_decisions(ax, samples, color)
            if seen:
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if i >= len(METRICS) - 2:
            ax.set_xlabel("seconds")
    strip = fig.add_subplot(grid[3, :], sharex=panels[0])
    _bottleneck_strip(strip, samples, times, color)

    handles, labels = panels[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=min(len(labels), 8) or 1,
        frameon=False,
        fontsize=10,
    )
    duration = max(times[-1], 0.0)
    fig.suptitle(
        f"{Path(path).name}: {len(samples)} sample{'s' if len(samples) > 1 else ''}"
        f" over {duration:.1f} s",
        fontsize=13,
    )
    panels[0].set_xlim(left=min(0.0, times[0]), right=times[-1] if times[-1] > 0 else 1.0)
    fig.savefig(target, format="png")
    return str(target)


def _value(sample: dict[str, Any], stage: str, key: str) -> float:
    """A stage's figure in one sample as a float; nan where it is missing or null."""
    value = sample.get("stages", {}).get(stage, {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _mark_decisions(ax: Axes, samples: list[dict[str, Any]], color: dict[str, str]) -> None:
    """Triangles on the workers panel where a controller decided something."""
    xs: list[float] = []
    ys: list[float] = []
    colors: list[str] = []
    for sample in samples:
        for decision in sample.get("decisions") or ():
            stage = decision.get("stage")
            xs.append(float(decision.get("t", sample["t"])))
            ys.append(_value(sample, stage, "workers"))
            colors.append(color.get(stage, "black"))
    if xs:
        ax.scatter(xs, ys, marker="v", s=60, c=colors, edgecolors="black", lw=0.6, zorder=3)
        ax.annotate(
            "\u25bc controller decision",
            xy=(1, 1),
            xycoords="axes fraction",
            ha="right",
            va="bottom",
            fontsize=8,
            color="#555555",
        )


def _bottleneck_strip(
    ax: Axes, samples: list[dict[str, Any]], times: list[float], color: dict[str, str]
) -> None:
    """One bar per sample interval, in the colour of the stage that was the bottleneck."""
    for i, sample in enumerate(samples):
        found = sample.get("bottleneck")
        if not found:
            continue
        start = times[i - 1] if i else min(0.0, times[0])
        ax.axvspan(start, times[i], color=color.get(found.get("stage"), "black"), lw=0)
    ax.set_yticks([])
    ax.set_ylabel("bottleneck", rotation=0, ha="right", va="center", fontsize=10)
    ax.set_xlabel("seconds (coloured: the stage that was the bottleneck; blank: none)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
