"""The load generator of benchmarks/http.py, run in a process of its own.

Two modes, each printing JSON on stdout (one object per line):

* a closed-loop run (the Haboob paper's clients): ``--clients`` clients, each over its own
  connection that it replaces every ``--per-connection`` (5) requests (the last one asks
  ``Connection: close``), thinking ``--think`` (20 ms) between an answer and its next
  request; each client draws its URLs from its own ``FileSet.sampler`` of the file set under
  ``--root`` (or asks for ``--path`` every time). No request timeout. The run lasts
  ``--warmup`` + ``--duration`` seconds; the figures are about the last ``--duration``
  seconds. One JSON object: throughput (requests and bytes per second), latency (mean,
  percentiles, max, CDF), Jain's index over the clients' throughputs, refusals (HTTP 503),
  errors by kind, and the generator's own CPU use::

      python -m benchmarks.http_load --port 8080 --root /tmp/docroot --clients 64 \\
          --duration 20 --warmup 5

* ``--hold N``: open N keep-alive connections (at most ``--concurrency`` at a time), make one
  request (``--path``) on each, print ``{"event": "open", ...}``, and hold them all open until a
  line arrives on stdin; then make a second request on each (which tells how many the server
  kept open: each one it had closed costs a reconnect), close them all, and print
  ``{"event": "done", ...}``. The benchmark reads the server's memory in between.

Two HTTP clients do the same thing (``--client``): ``lean`` (the default), the asyncio
protocol of benchmarks/_httpclient.py, a small fraction of a CPU's worth per request; and
``h11``, ``aseda.bench.closed_loop`` over ``aseda.bench.HttpTarget`` (h11 over anyio streams,
about 200 us of CPU per request: it fills its core at 4,000 to 4,500 requests/s), kept to
compare them. Both time a request from when its client starts it (connecting included, when
it needs a new connection) to the last byte of the answer, and report through
``aseda.bench.Report``.

Runs on asyncio with uvloop when installed, the fastest loop for the generator (``h11`` also
runs on trio). The file descriptor soft limit is raised to the hard limit first (10,000
connections need more than the usual 1024).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import anyio

from aseda.bench import HttpTarget, Outcome, Report, closed_loop, jain_index

from . import _httpclient

__all__ = ["main", "raise_fd_limit"]

MB = 1e6


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


class _Paths:
    """Each client's URL sampler, and the size of the file each request asked for."""

    def __init__(self, root: Path | None, directories: int | None, fixed: str, seed: int) -> None:
        self.sizes: dict[tuple[int, int], int] = {}
        self.fixed = fixed
        self._samplers: dict[int, Callable[[], str]] = {}
        self._files: dict[str, int] = {}
        self._seed = seed
        self._fileset: Any = None
        if root is not None:
            from examples.haboob import fileset

            if directories is None:
                directories = sum(1 for p in root.glob("dir*") if p.is_dir())
            if directories == 0:
                raise SystemExit(f"http_load: no file set under {root}")
            # generate() keeps the files already there (right size), so this only lists them.
            self._fileset = fileset.generate(root, directories=directories)
            self._files = self._fileset.files

    def __call__(self, client: int, seq: int) -> str:
        if self._fileset is None:
            return self.fixed
        pick = self._samplers.get(client)
        if pick is None:
            pick = self._samplers[client] = self._fileset.sampler(
                seed=self._seed * 100_003 + client
            )
        path: str = pick()
        # A retried request (stale keep-alive connection) asks again: the last path counts.
        self.sizes[client, seq] = self._files[path]
        return path


class _Counts(Protocol):
    """What a client counted over the run (``HttpTarget`` or ``_httpclient.ClosedLoop``)."""

    @property
    def requests_per_connection(self) -> int | None: ...
    @property
    def connections(self) -> int: ...
    @property
    def answered(self) -> int: ...
    @property
    def bytes_received(self) -> int: ...


def summarise(
    report: Report,
    paths: _Paths,
    target: _Counts,
    *,
    cancelled_at: float,
    cpu: float,
    wall: float,
    client: str = "lean",
) -> dict[str, Any]:
    """The JSON-ready figures of one closed-loop run."""
    samples = report.samples
    assert samples is not None
    window = report.window
    seconds = window.seconds
    served = [
        s
        for s in samples.items
        if s.outcome is Outcome.OK and window.start <= s.finished < window.end
    ]
    if paths.sizes:
        nbytes = sum(paths.sizes.get((s.client, s.seq), 0) for s in served)
    else:  # one fixed path: every answer has the same size
        nbytes = round(len(served) * target.bytes_received / max(1, target.answered))
    latencies = [s.finished - s.intended for s in served]
    # Requests still waiting when the run was cancelled: their wait so far is a lower bound
    # of a response time that the "max" of the served requests does not see.
    waiting = [cancelled_at - s.intended for s in samples.items if s.outcome is None]
    lat = window.latency
    details: Counter[str] = Counter(report.errors)
    return {
        "clients": report.clients,
        "duration": seconds,
        "warmup": report.warmup,
        "think_time": report.params.get("think_time"),
        "requests_per_connection": target.requests_per_connection,
        "requests": window.requests,
        "ok": window.ok,
        "refused": window.refused,
        "errors": window.errors,
        "unfinished": window.unfinished,
        "error_details": dict(details),
        "refusal_details": dict(report.refusals),
        "throughput_rps": window.throughput,
        "bytes": nbytes,
        "mbytes_per_s": nbytes / MB / seconds if seconds > 0 else None,
        "latency": {
            "count": len(latencies),
            "mean": _number(sum(latencies) / len(latencies)) if latencies else None,
            "p50": _number(lat.p50),
            "p90": _number(lat.p90),
            "p99": _number(lat.p99),
            "max": max(latencies) if latencies else None,
        },
        "max_waiting": max(waiting) if waiting else None,
        "waiting": len(waiting),
        "client_ok": list(report.client_ok),
        "jain": _number(jain_index(report.client_ok)) if any(report.client_ok) else None,
        "cdf": [[q, v] for q, v in report.cdf],
        "timeline": [[w.start, w.throughput, _number(w.latency.p90)] for w in report.intervals],
        "connections": target.connections,
        "bytes_received": target.bytes_received,
        "generator": {
            "client": client,
            "cpu_seconds": cpu,
            "wall_seconds": wall,
            "cpu_share": cpu / wall if wall > 0 else None,
            "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        },
    }


async def run_clients(args: argparse.Namespace) -> dict[str, Any]:
    """One closed-loop run; its summary."""
    paths = _Paths(args.root, args.directories, args.path, args.seed)
    if args.client == "lean":
        run = _httpclient.ClosedLoop(
            args.host,
            args.port,
            paths,
            args.clients,
            args.warmup + args.duration,
            think=args.think,
            per_connection=args.per_connection,
        )
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        cancelled_at = await run.run(args.grace)
        # The run's own CPU: building the report afterwards (~10 us a request) is left out.
        cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
        report = run.report(
            warmup=args.warmup, grace=args.grace, seed=args.seed, name=f"{args.clients} clients"
        )
        return summarise(report, paths, run, cancelled_at=cancelled_at, cpu=cpu, wall=wall)
    async with HttpTarget(
        args.host,
        args.port,
        paths,
        requests_per_connection=args.per_connection,
        timeout=None,  # a slow answer is a long response time, not an error
    ) as target:
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        report = await closed_loop(
            target,
            args.clients,
            args.warmup + args.duration,
            think_time=args.think,
            seed=args.seed,
            warmup=args.warmup,
            grace=args.grace,
            name=f"{args.clients} clients",
            progress=False,  # stdout carries the JSON
        )
        assert report.samples is not None
        cancelled_at = time.perf_counter() - report.samples.origin
        cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
    return summarise(
        report, paths, target, cancelled_at=cancelled_at, cpu=cpu, wall=wall, client="h11"
    )


def _emit(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


async def hold(args: argparse.Namespace) -> dict[str, Any]:
    """Open ``args.hold`` connections, a request on each; hold them until stdin says."""
    if args.client == "h11":
        return await hold_h11(args)
    held = _httpclient.Held(args.host, args.port, args.path, args.hold, timeout=60.0)
    try:
        start = time.perf_counter()
        first = await held.round(args.concurrency)
        opened = held.connections
        _emit(
            {
                "event": "open",
                "connections": opened,
                "ok": first["ok"],
                "outcomes": dict(first),
                "seconds": time.perf_counter() - start,
            }
        )
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        held_seconds = time.perf_counter() - start
        if line.strip() == "abort":
            return {"event": "done", "aborted": True}
        second = await held.round(args.concurrency)
        reconnects = held.connections - opened
    finally:
        held.close()
    return {
        "event": "done",
        "connections": opened,
        "first": dict(first),
        "second": dict(second),
        "reconnects": reconnects,
        "held_seconds": held_seconds,
    }


async def hold_h11(args: argparse.Namespace) -> dict[str, Any]:
    """``hold`` over ``aseda.bench.HttpTarget``."""
    n = args.hold
    limiter = anyio.CapacityLimiter(args.concurrency)
    async with HttpTarget(
        args.host, args.port, args.path, requests_per_connection=None, timeout=60.0
    ) as target:

        async def round_(seq: int) -> Counter[str]:
            outcomes: Counter[str] = Counter()

            async def one(client: int) -> None:
                async with limiter:
                    try:
                        result = await target(client, seq)
                    except Exception as exc:
                        outcomes[type(exc).__name__] += 1
                    else:
                        outcomes["ok" if result in (None, Outcome.OK) else str(result)] += 1

            async with anyio.create_task_group() as tg:
                for client in range(n):
                    tg.start_soon(one, client)
            return outcomes

        start = time.perf_counter()
        first = await round_(0)
        opened = target.connections
        _emit(
            {
                "event": "open",
                "connections": opened,
                "ok": first["ok"],
                "outcomes": dict(first),
                "seconds": time.perf_counter() - start,
            }
        )
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        held = time.perf_counter() - start
        if line.strip() == "abort":
            return {"event": "done", "aborted": True}
        second = await round_(1)
        reconnects = target.connections - opened
    return {
        "event": "done",
        "connections": opened,
        "first": dict(first),
        "second": dict(second),
        "reconnects": reconnects,
        "held_seconds": held,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http_load",
        description="Closed-loop HTTP clients (or N held connections); JSON on stdout.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, help="the file set's root (URLs in its mix)")
    parser.add_argument(
        "--directories", type=int, help="use the set's first N directories (default: all)"
    )
    parser.add_argument("--path", default="/", help="the URL path without --root ('/')")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before (2)")
    parser.add_argument("--grace", type=float, default=2.0, help="seconds for late answers")
    parser.add_argument("--think", type=float, default=0.020, help="think time, s (0.020)")
    parser.add_argument("--per-connection", type=int, default=5, help="requests per connection")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hold", type=int, metavar="N", help="hold N connections instead")
    parser.add_argument("--concurrency", type=int, default=256, help="--hold: connects at once")
    parser.add_argument(
        "--backend", choices=("uvloop", "asyncio", "trio"), default="uvloop", help="(uvloop)"
    )
    parser.add_argument(
        "--client",
        choices=("lean", "h11"),
        default="lean",
        help="the HTTP client: lean (asyncio protocol) or h11 (aseda.bench.HttpTarget)",
    )
    args = parser.parse_args(argv)
    if args.client == "lean" and args.backend == "trio":
        parser.error("the lean client runs on asyncio (uvloop or asyncio); trio needs --client h11")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    if args.backend == "trio":
        backend, options = "trio", {}
    else:
        backend, options = "asyncio", {"use_uvloop": args.backend == "uvloop"}
    if args.hold is not None:
        data = anyio.run(hold, args, backend=backend, backend_options=options)
    else:
        data = anyio.run(run_clients, args, backend=backend, backend_options=options)
    _emit(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
