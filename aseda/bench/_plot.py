"""PNG plots of reports (matplotlib, the ``bench`` extra): latency CDF, throughput and p90."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ._report import Report

__all__ = ["plot"]


def plot(reports: Sequence[Report], path: str | Path, *, title: str | None = None) -> Path:
    """Plot one or more reports side by side in one PNG and return its path.

    Three panels, one line per report: the latency distribution of the main window (share of
    requests served within a latency, log scale), and over time, per interval of the
    timeline, the throughput (with the offered rate dashed) and the 90th-percentile latency.
    The phases of the first report are shaded; the p90 panel is on a log scale.

    Args:
        reports: the reports, labelled by their names.
        path: where to write the PNG (its folder is created).
        title: the figure's title (by default the reports' names).

    Raises:
        ImportError: matplotlib is not installed (``pip install aseda[bench]``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (cdf, rate, p90) = plt.subplots(1, 3, figsize=(15, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, report in enumerate(reports):
        color = colors[k % len(colors)]
        label = report.name or f"run {k + 1}"
        if report.cdf:
            xs = [v * 1e3 for _, v in report.cdf]
            ys = [q / 100 for q, _ in report.cdf]
            cdf.step(xs, ys, where="post", color=color, label=label)
        if not report.intervals:
            continue
        edges = [report.intervals[0].start, *(w.end for w in report.intervals)]
        served = [w.throughput for w in report.intervals]
        offered = [w.offered for w in report.intervals]
        rate.stairs(served, edges, color=color, lw=1.8, baseline=None, label=f"{label}: served")
        rate.stairs(
            offered,
            edges,
            color=color,
            ls="--",
            alpha=0.6,
            baseline=None,
            label=f"{label}: offered",
        )
        p90s = [w.latency.p90 * 1e3 for w in report.intervals]
        p90.stairs(p90s, edges, color=color, lw=1.8, baseline=None, label=label)
    if reports:
        for k, phase in enumerate(reports[0].phases):
            for ax in (rate, p90):
                ax.axvspan(phase.start, phase.end, color="0.5", alpha=0.08 * (1 + k % 2), lw=0)
    plain = FuncFormatter(lambda x, _: f"{x:g}")
    cdf.set_xscale("log")
    cdf.xaxis.set_major_formatter(plain)
    cdf.xaxis.set_minor_formatter(plain)
    cdf.set_xlabel("latency, ms (log)")
    cdf.set_ylabel("share of served requests within")
    cdf.set_ylim(0, 1.02)
    cdf.set_title("Latency distribution")
    rate.set_xlabel("time, s")
    rate.set_ylabel("requests/s")
    rate.set_title("Throughput (served) and offered load")
    p90.set_xlabel("time, s")
    p90.set_ylabel("p90 latency, ms")
    if any(
        not math.isnan(w.latency.p90) and w.latency.p90 > 0 for r in reports for w in r.intervals
    ):
        p90.set_yscale("log")
        p90.yaxis.set_major_formatter(plain)
        p90.yaxis.set_minor_formatter(plain)
    p90.set_title("90th-percentile latency (served per interval)")
    for ax in (cdf, rate, p90):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title or ", ".join(r.name for r in reports), fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
