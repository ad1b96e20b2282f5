"""What introspection costs on the per-event path: statistics, tracing and instruments.

Run by hand from the repository root (a benchmark, not a test)::

    python -m benchmarks.overhead            # --events 200000 --hops 4 --repeat 5
    python -m benchmarks.overhead --quick

The hop benchmark's saturated pipeline (N events through K trivial stages, sent with
``await running.send``) runs in four configurations, side by side in one process, round robin
so that noise hits every configuration alike; each cell is the best of ``--repeat`` runs:

* ``off``: ``graph.run(statistics=False)``: no sampling, no timing;
* ``stats``: the default, ``graph.run()``: about 1000 events a second travel in a timing
  envelope (queue wait, service and response time histograms), the rest pay nothing;
* ``trace 1%``: ``graph.run(trace=0.01)``: also one event in a hundred traced, each visit to a
  stage logged as a structlog ``"trace"`` event (rendered as JSON by structlog into memory, no
  I/O, so the cost is aseda's and structlog's, not a terminal's);
* ``instrument``: the default plus an instrument that overrides only ``graph_started`` (the
  per-event hooks are not overridden, so they must cost nothing).

Targets (from the project's issue): stats at least 0.9x the speed of off; trace 1% at most 5 %
slower than stats; an instrument with no per-event hooks costs nothing (within noise, 2 %).

The same table is printed twice: for trivial handlers (the hop benchmark, where a whole
4-hop path costs about 2 us, so one traced event's structlog line weighs as much as ten
events), and for handlers that do ``--work-us`` microseconds of work (20 by default), closer
to a real service.
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from typing import Any

import anyio
import structlog

import aseda

CONFIGS = ("off", "stats", "trace 1%", "instrument")


class StartOnly(aseda.Instrument):
    """Overrides one hook that runs once per graph, none per event."""

    def __init__(self) -> None:
        self.started = 0

    def graph_started(self, graph: aseda.Graph) -> None:
        self.started += 1


async def ident(x: int) -> int:
    return x


def busy_handler(work: float) -> Any:
    async def busy(x: int) -> int:
        end = time.perf_counter() + work
        while time.perf_counter() < end:
            pass
        return x

    return busy


def chain(hops: int, work: float = 0.0) -> aseda.Graph:
    handler = busy_handler(work) if work else ident
    stages = [aseda.stage(name=f"hop{i}")(handler) for i in range(hops)]
    flow: Any = stages[0]
    for s in stages[1:]:
        flow = flow >> s
    return aseda.Graph(flow)


async def pipeline(config: str, events: int, hops: int, work: float) -> float:
    graph = chain(hops, work)
    options: dict[str, Any] = {
        "off": {"statistics": False},
        "stats": {},
        "trace 1%": {"trace": 0.01},
        "instrument": {"instruments": [StartOnly()]},
    }[config]
    start = time.perf_counter()
    async with graph.run(**options) as running:
        send = running.send
        for i in range(events):
            await send(i)
    elapsed = time.perf_counter() - start
    assert running.stats()[f"hop{hops - 1}"].processed == events
    return elapsed / events / hops * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--hops", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work-us", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.repeat = 50_000, 3
    met = checks = 0
    for work in (0.0, args.work_us * 1e-6):
        # Busy handlers: fewer events, the same order of wall time.
        events = args.events if not work else max(2000, int(args.events / (1 + work * 2e6)))
        m, c = measure(args, events, work)
        met, checks = met + m, checks + c
    print(f"\nTargets: {met} of {checks} met")
    return 0


def measure(args: argparse.Namespace, events: int, work: float) -> tuple[int, int]:
    """One table: every backend and configuration, best of the repeats."""
    # Trace events are rendered to JSON into memory: the cost of making them, without I/O.
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    backends: list[tuple[str, str, dict[str, Any]]] = [
        ("asyncio", "asyncio", {}),
        ("uvloop", "asyncio", {"use_uvloop": True}),
        ("trio", "trio", {}),
    ]
    best: dict[tuple[str, str], float] = {}
    kind = f"handlers doing {work * 1e6:.0f} us of work" if work else "trivial handlers"
    print(f"\n== {kind}: {events} events x {args.hops} hops, best of {args.repeat}")
    for run in range(1, args.repeat + 1):
        for label, backend, options in backends:
            for config in CONFIGS:
                gc.collect()
                us = anyio.run(
                    pipeline,
                    config,
                    events,
                    args.hops,
                    work,
                    backend=backend,
                    backend_options=options,
                )
                key = (label, config)
                best[key] = min(best.get(key, us), us)
                print(
                    f"  {run}/{args.repeat} {label:8} {config:11} {us:7.3f} us/event/hop",
                    flush=True,
                )
    print("\nus per event per hop (best of runs); speed relative to 'off'")
    print(f"{'':12}" + "".join(f"{b[0]:>20}" for b in backends))
    for config in CONFIGS:
        row = f"{config:12}"
        for label, _, _ in backends:
            us = best[(label, config)]
            row += f"{us:10.3f} ({best[(label, 'off')] / us:4.2f}x)"
        print(row)
    print()
    met = 0
    checks = 0
    for label, _, _ in backends:
        off, stats = best[(label, "off")], best[(label, "stats")]
        trace, inst = best[(label, "trace 1%")], best[(label, "instrument")]
        for name, value, ok, target in (
            ("stats vs off, speed", off / stats, off / stats >= 0.9, ">= 0.90x"),
            (
                "trace 1% vs stats, extra cost",
                trace / stats - 1,
                trace / stats - 1 <= 0.05,
                "<= 5 %",
            ),
            (
                "instrument vs stats, extra cost",
                inst / stats - 1,
                inst / stats - 1 <= 0.02,
                "<= 2 % (noise)",
            ),
        ):
            checks += 1
            met += ok
            shown = f"{value:.2f}x" if "speed" in name else f"{value * 100:+.1f} %"
            print(f"  {'PASS' if ok else 'MISS'}  {label:8} {name:32} {shown:>9}  target {target}")
    return met, checks


if __name__ == "__main__":
    raise SystemExit(main())
