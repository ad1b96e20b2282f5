"""A worker pool that sizes itself, watched by the profiler, drawn as a graph and a plot.

A blocking stage (20 ms of work on 15 % of events, SEDA's Gnutella router) gets 600 events a
second for four seconds. A WorkerPool controller grows its threads by Little's law; the
profiler records every stage each 0.25 s, with the controller's decisions; at the end the
graph is printed as Mermaid and the profile drawn with ``aseda plot``.

    python examples/observe_and_control.py [--out DIR]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import anyio

import aseda
from aseda import bench


@aseda.stage(capacity=5000)
async def receive(packet: int) -> int:
    return packet


@aseda.stage(workers=(1, 16), capacity=5000, control=[aseda.WorkerPool(threshold=16)])
def route(packet: int) -> int:
    if random.random() < 0.15:
        time.sleep(0.02)  # a query: look it up (blocking)
    return packet


graph = aseda.Graph(receive >> route)


async def main(out: Path) -> None:
    profile = out / "profile.jsonl"
    async with (
        graph.run(control_interval=0.25) as running,
        aseda.Profiler(running, profile, interval=0.25),
    ):
        report = await bench.open_loop(bench.graph_target(running), 600, 4.0, progress=False)
        stats = running.stats()
    window = report.window
    print(f"served {window.throughput:.0f}/s, p90 {window.latency.p90 * 1e3:.1f} ms")
    print(
        "route workers now:",
        stats["route"].workers,
        "| last decision:",
        stats["route"].last_decision,
    )
    print(aseda.to_mermaid(graph, stats), end="")
    from aseda._plot import plot_profile

    print("profile plot:", plot_profile(str(profile), str(out / "profile.png")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/example"))
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    anyio.run(main, out)
