"""SEDA's point in one run: a staged service hit by a load spike.

A four-stage request pipeline (parse -> lookup -> render -> respond) whose lookup stage can
serve about 800 requests/s. Requests arrive open loop: 400/s, then a spike of 2000/s, then
400/s again. The same pipeline runs twice:

* with bounded queues (aseda's default): when the spike fills the queues, new requests are
  refused at once, and the ones admitted keep a short response time;
* with unbounded queues: nothing is refused, and every request waits behind the backlog.

Run it with ``python3 dev.py demo`` (or ``python examples/spike_demo.py [--scale 0.5]``).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from dataclasses import dataclass, field

import anyio
import structlog

import aseda

#: (name, seconds, requests per second)
PHASES = [("steady", 1.0, 400), ("spike", 1.5, 2000), ("recover", 1.5, 400)]


def build(capacity: float) -> aseda.Graph:
    """The service: the same handlers, with the queue capacity under test."""

    @aseda.stage(capacity=capacity)
    async def parse(raw: bytes) -> str:
        return raw.decode()

    @aseda.stage(capacity=capacity, workers=4)
    async def lookup(path: str) -> tuple[str, int]:
        await anyio.sleep(0.005)  # a 5 ms backend query: 4 workers serve ~800/s
        return path, len(path)

    @aseda.stage(capacity=capacity, workers=2)
    def render(row: tuple[str, int]) -> str:  # a plain def: runs on the stage's threads
        return f"<h1>{row[0]}</h1><p>{row[1]} bytes</p>"

    @aseda.stage(capacity=capacity)
    async def respond(page: str) -> int:
        return len(page)

    return aseda.Graph(parse >> lookup >> render >> respond)


@dataclass
class Phase:
    name: str
    offered: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)

    def row(self) -> str:
        served = len(self.latencies)
        if served:
            ordered = sorted(self.latencies)
            p50 = statistics.median(ordered) * 1e3
            p90 = ordered[min(served - 1, int(0.9 * served))] * 1e3
            lat = f"{p50:8.0f} {p90:8.0f}"
        else:
            lat = f"{'-':>8} {'-':>8}"
        share = 100 * self.refused / self.offered if self.offered else 0.0
        return (
            f"{self.name:<8} {self.offered:>8} {served:>8} {self.refused:>8} {share:>7.0f}% {lat}"
        )


async def drive(graph: aseda.Graph, scale: float) -> tuple[list[Phase], aseda.GraphStats]:
    phases = [Phase(name) for name, _, _ in PHASES]

    async def request(running: aseda.RunningGraph, phase: Phase, i: int) -> None:
        start = time.perf_counter()
        try:
            await running.call(f"/item/{i}".encode(), on_refuse="shed")
        except aseda.Rejected:
            phase.refused += 1  # refused at once: the client can retry or show "busy"
            return
        phase.latencies.append(time.perf_counter() - start)

    async with graph.run() as running, anyio.create_task_group() as clients:
        clock = time.perf_counter()
        i = 0
        for phase, (_, seconds, rate) in zip(phases, PHASES, strict=True):
            count = int(seconds * scale * rate)
            for _ in range(count):
                clock += 1 / rate
                delay = clock - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                phase.offered += 1
                i += 1
                clients.start_soon(request, running, phase, i)
    return phases, running.stats()


def report(title: str, phases: list[Phase], stats: aseda.GraphStats) -> None:
    print(f"\n== {title}")
    header = ("phase", "offered", "served", "refused", "share", "p50 ms", "p90 ms")
    print(f"{header[0]:<8} " + " ".join(f"{h:>8}" for h in header[1:]))
    for phase in phases:
        print(phase.row())
    print("\nper stage, after the run:")
    print(stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="stretch every phase's duration")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    print(__doc__.split("\n\n")[1].replace("\n", " "))
    for title, capacity in [
        ("bounded queues (capacity 64 per stage): SEDA", 64),
        ("unbounded queues: no load conditioning", math.inf),
    ]:
        phases, stats = anyio.run(drive, build(capacity), args.scale, backend=args.backend)
        report(title, phases, stats)
    print(
        "\nThe bounded service refuses part of the spike and answers the rest quickly;"
        "\nthe unbounded one accepts everything and makes everyone wait."
    )


if __name__ == "__main__":
    main()
