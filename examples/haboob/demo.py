"""Haboob under a load spike: a staged web server sheds what it cannot serve in time.

Generates a SPECweb99-like file set several times larger than the page cache, starts Haboob
in this process, and drives it with closed-loop HTTP clients as in the SEDA paper (each
thinks 20 ms between requests and reconnects every 5): a baseline of a few clients, a spike
of many more, then the baseline again. Prints a row per phase (throughput, response times,
the share refused with 503), the per-stage table and the page cache's figures, and writes
plots (the clients' view and the stages' profile) to a results directory.

Run it with ``python examples/haboob/demo.py`` (or ``python -m examples.haboob.demo``);
``--scale 0.5`` halves every phase, ``--backend trio`` runs it on trio.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `examples.haboob` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyio
import structlog

import aseda
from aseda.bench import HttpTarget, Report, closed_loop
from examples.haboob.fileset import FileSet, generate
from examples.haboob.server import Config, Haboob, MiB, serve_haboob

#: (name, clients, seconds at scale 1)
PHASES = [("baseline", 16, 5.0), ("spike", 400, 10.0), ("recovery", 16, 5.0)]
FILE_SET_MB = 40
CACHE_MB = 4
#: a simulated disk seek per read: the generated files all sit in the OS page cache, while the
#: paper's 3.31 GB file set did not fit in memory; without it the disk is never the bottleneck
DISK_SECONDS = 0.010
READ_THREADS = 8


async def drive(haboob: Haboob, files: FileSet, scale: float, spike: int) -> list[Report]:
    """Run the phases one after the other; one report per phase."""
    pick = files.sampler(seed=1)
    host, port = "127.0.0.1", haboob.port
    reports = []
    for name, clients, seconds in PHASES:
        clients = spike if name == "spike" else clients
        async with HttpTarget(
            host, port, lambda client, seq: pick(), requests_per_connection=5, timeout=30
        ) as target:
            reports.append(
                await closed_loop(
                    target,
                    clients=clients,
                    duration=max(0.5, seconds * scale),
                    think_time=0.020,
                    interval=max(0.1, 0.5 * scale),
                    name=f"{name}: {clients} clients",
                    progress=False,
                )
            )
    return reports


async def main(args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="haboob-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="haboob-root-") as root:
        files = generate(root, total_bytes=FILE_SET_MB * MiB)
        print(
            f"file set: {files.directories} directories, {files.total_bytes / MiB:.0f} MiB;"
            f" page cache {CACHE_MB} MiB; simulated disk seek {args.disk_ms:g} ms;"
            f" backend {args.backend}"
        )
        config = Config(
            cache_bytes=CACHE_MB * MiB,
            threshold=args.threshold,
            read_workers=(2, 2, READ_THREADS),
            read_threshold=args.read_threshold,
            read_delay=args.disk_ms / 1e3,
            lag_target=args.lag_ms / 1e3 if args.lag_ms else None,
        )
        profile = out / "profile.jsonl"
        async with serve_haboob(root, config=config) as haboob:
            print(f"Haboob listening on {haboob.url}")
            print(aseda.to_mermaid(haboob.running.graph))
            async with aseda.Profiler(haboob.running, profile, interval=0.25):
                reports = await drive(haboob, files, args.scale, args.spike_clients)
        print("\nper phase (closed-loop clients, think 20 ms, reconnect every 5 requests):")
        print(aseda.bench.table(reports))
        print("\nper stage, after the run:")
        print(haboob.running.stats())
        print()
        print(haboob.cache_stats())
        stats = haboob.server.statistics()
        print(
            f"socket layer: {stats.connections_total} connections, {stats.requests} requests,"
            f" {stats.refused} refused (503), {stats.bytes_sent / MiB:.0f} MiB sent"
        )
    written = [aseda.bench.plot(reports, out / "clients.png", title="Haboob under a spike")]
    try:
        from aseda._plot import plot_profile

        written.append(Path(plot_profile(profile, out / "profile.png")))
    except Exception as exc:  # the profile plot is a bonus; say why it is missing
        print(f"(no profile plot: {exc})")
    print("\nplots written:")
    for path in written:
        print(f"  {path}")


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="stretch every phase")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "uvloop", "trio"])
    parser.add_argument("--threshold", type=int, default=512, help="parse stage's threshold")
    parser.add_argument(
        "--read-threshold", type=int, default=32, help="misses queued before read sheds"
    )
    parser.add_argument(
        "--disk-ms", type=float, default=DISK_SECONDS * 1e3, help="simulated seek per read"
    )
    parser.add_argument("--spike-clients", type=int, default=PHASES[1][1])
    parser.add_argument(
        "--lag-ms", type=float, default=0.0, help="shed while the loop lags more (0: off)"
    )
    parser.add_argument("--out", default=None, help="results directory (default: a temp dir)")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    backend = "trio" if args.backend == "trio" else "asyncio"
    options = {"use_uvloop": True} if args.backend == "uvloop" else {}
    anyio.run(main, args, backend=backend, backend_options=options)


if __name__ == "__main__":
    cli()
