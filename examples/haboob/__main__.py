"""Run Haboob: ``python -m examples.haboob --root DIR [options]``.

Serves DIR and, once listening, prints one line ``listening on http://HOST:PORT`` to
stdout, then runs until SIGINT or SIGTERM: it stops accepting, lets the requests in flight
finish, drains the graph and exits 0. ``--generate MB`` first writes a SPECweb99-like file
set of about MB megabytes into DIR.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from pathlib import Path

import anyio
import structlog

from .fileset import generate
from .server import Config, MiB, serve_haboob


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.haboob", description="Haboob, a staged static-file server."
    )
    parser.add_argument("--root", required=True, type=Path, help="the document root")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "uvloop", "trio"])
    parser.add_argument("--cache-mb", type=float, default=64.0, help="page cache size, MiB")
    parser.add_argument(
        "--stats-port", type=int, default=None, help="serve statistics for `aseda top` here"
    )
    parser.add_argument(
        "--generate", type=float, metavar="MB", help="first write a SPECweb99-like file set"
    )
    parser.add_argument(
        "--control",
        default="none",
        choices=["none", "aimd"],
        help="admission on parse: a queue threshold (none) or an AIMD overload controller",
    )
    parser.add_argument("--target", type=float, default=0.05, help="AIMD target, seconds")
    parser.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="parse refuses while this many are queued (default: only a full queue)",
    )
    parser.add_argument("--read-workers", type=int, default=32, help="most read threads")
    parser.add_argument("--verbose", action="store_true", help="log aseda's info lines")
    parser.add_argument(
        "--no-gc-tuning",
        dest="gc_tuning",
        action="store_false",
        help="keep Python's default garbage-collector thresholds",
    )
    return parser


async def _serve(args: argparse.Namespace, config: Config) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with serve_haboob(
            args.root, host=args.host, port=args.port, config=config, stats_port=args.stats_port
        ) as haboob:
            if args.gc_tuning:
                # A server's long-lived objects (stages, connections, the cache) need no
                # scanning; freeze them, and collect the young generation every 50,000
                # allocations instead of 700. At 1024 clients the default spent about 16 %
                # of the time in the collector; this gave 10-13 % more requests per second.
                gc.freeze()
                gc.set_threshold(50_000, 10, 10)
            print(f"listening on {haboob.url}", flush=True)
            if haboob.stats_url:
                print(f"statistics on {haboob.stats_url}", file=sys.stderr, flush=True)
            async for _ in signals:
                break
            print("shutting down: draining the graph", file=sys.stderr, flush=True)
    print(haboob.running.stats(), file=sys.stderr)
    print(haboob.cache_stats(), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    if args.generate is not None:
        files = generate(args.root, total_bytes=int(args.generate * MiB))
        print(
            f"file set: {files.directories} directories, {files.total_bytes / MiB:.1f} MiB"
            f" in {args.root}",
            file=sys.stderr,
        )
    if not args.root.is_dir():
        print(f"error: --root {args.root} is not a directory", file=sys.stderr)
        return 2
    config = Config(
        cache_bytes=int(args.cache_mb * MiB),
        control=args.control,
        target=args.target,
        threshold=args.threshold,
        read_workers=(2, min(4, args.read_workers), max(2, args.read_workers)),
    )
    backend = "trio" if args.backend == "trio" else "asyncio"
    options = {"use_uvloop": True} if args.backend == "uvloop" else {}
    anyio.run(_serve, args, config, backend=backend, backend_options=options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
