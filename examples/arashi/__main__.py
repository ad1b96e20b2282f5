"""Run Arashi: ``python -m examples.arashi [options]``; see ``--help`` and docs/arashi.md.

Prints ``listening on http://HOST:PORT`` (one line, flushed) once the server accepts
connections, then serves until SIGINT or SIGTERM, and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aseda

from .conditioning import Arashi, Settings, parse_control


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    p = argparse.ArgumentParser(
        prog="python -m examples.arashi",
        description="Arashi: an overload-controlled mail service on aseda.asgi.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument(
        "--db",
        default=None,
        help="sqlite:PATH (kept and reused if it exists) or postgresql://DSN; "
        "default: a new SQLite file in a temporary directory",
    )
    p.add_argument("--users", type=int, default=defaults.users, help="users in the corpus")
    p.add_argument(
        "--messages", type=int, default=defaults.messages, help="messages per user in the corpus"
    )
    p.add_argument(
        "--control",
        default=defaults.control,
        help="none | aimd | usits | limit:N (a fixed concurrency limit per route); "
        f"default {defaults.control}",
    )
    p.add_argument("--classes", action="store_true", help="per-class admission (0 paying, 1 free)")
    p.add_argument(
        "--degrade", action="store_true", help="serve lighter list and search pages under overload"
    )
    p.add_argument(
        "--target", type=float, default=defaults.target, help="the p90 target, seconds (1.0)"
    )
    p.add_argument(
        "--render-cost",
        type=int,
        default=defaults.render_cost,
        help="render each full page this many times (page-generation cost; "
        f"default {defaults.render_cost}, 1 = the bare templates)",
    )
    p.add_argument(
        "--route-workers",
        type=int,
        default=defaults.route_workers,
        help=f"requests of one type served at once (default {defaults.route_workers})",
    )
    p.add_argument("--db-threads", type=int, default=defaults.db_threads)
    p.add_argument("--render-threads", type=int, default=defaults.render_threads)
    p.add_argument("--server", choices=("uvicorn", "hypercorn"), default="uvicorn")
    p.add_argument(
        "--loop",
        choices=("uvloop", "asyncio", "trio"),
        default=None,
        help="event loop: uvicorn uvloop (default) or asyncio; hypercorn trio (default) or asyncio",
    )
    p.add_argument("--stats-port", type=int, default=None, help="serve aseda's /stats here")
    args = p.parse_args(argv)
    try:
        parse_control(args.control)
    except ValueError as exc:
        p.error(str(exc))
    if args.loop is None:
        args.loop = "uvloop" if args.server == "uvicorn" else "trio"
    if args.server == "uvicorn" and args.loop == "trio":
        p.error("uvicorn cannot run on trio: use --server hypercorn")
    return args


def _listening(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown}:{port}", flush=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _on_startup(app: Any, started: Any) -> Any:
    """``app``, calling ``started()`` once its lifespan startup is complete."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def spy(message: Any) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                started()

        await app(scope, receive, spy)

    return wrapped


@contextlib.asynccontextmanager
async def _announced(
    args: argparse.Namespace, arashi: Any, sock: socket.socket
) -> AsyncIterator[None]:
    """Once the service is up: the stats endpoint (with --stats-port), then the address line."""
    async with contextlib.AsyncExitStack() as stack:
        if args.stats_port is not None:
            await stack.enter_async_context(
                aseda.serve_stats(arashi.app.running, args.host, args.stats_port)
            )
        _listening(args.host, sock.getsockname()[1])
        yield


async def _until_started(started: Any, serving: Any) -> bool:
    """Wait for the startup event or the server's end; True if it started."""
    import asyncio

    waiter = asyncio.ensure_future(started.wait())
    await asyncio.wait([waiter, serving], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    return bool(started.is_set()) and not serving.done()


@contextlib.contextmanager
def _signals(stop: Any) -> Iterator[None]:
    """SIGINT and SIGTERM call ``stop()``: a graceful shutdown, then exit 0."""
    old = {s: signal.signal(s, lambda *_: stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def run_uvicorn(arashi: Arashi, args: argparse.Namespace, sock: socket.socket) -> None:
    import asyncio

    import uvicorn

    started = asyncio.Event()
    config = uvicorn.Config(
        _on_startup(arashi.app, started.set),
        lifespan="on",
        log_level="warning",
        access_log=False,
        loop="none",
        timeout_keep_alive=30,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises a caught signal after shutting down (the process then dies of it);
    # handle them here instead, so a SIGTERM ends in a clean exit 0.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]

    async def main() -> None:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        up = await _until_started(started, serving)
        async with _announced(args, arashi, sock) if up else contextlib.nullcontext():
            await serving

    def stop() -> None:
        server.should_exit = True

    with _signals(stop):
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())


def run_hypercorn(arashi: Arashi, args: argparse.Namespace, sock: socket.socket) -> None:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn closes the fd it is given
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 30
    config.backlog = 2048

    if args.loop == "trio":
        import trio
        from hypercorn.trio import serve as trio_serve

        async def trio_main() -> None:
            stopped = trio.Event()

            async def shutdown() -> None:
                await stopped.wait()

            async with trio.open_nursery() as nursery:
                await nursery.start(
                    lambda task_status: trio_serve(
                        arashi.app,  # type: ignore[arg-type]
                        config,
                        shutdown_trigger=shutdown,
                        task_status=task_status,
                    )
                )
                async with _announced(args, arashi, sock):
                    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            break
                    stopped.set()

        trio.run(trio_main)
    else:
        import asyncio

        from hypercorn.asyncio import serve as asyncio_serve

        async def asyncio_main() -> None:
            stopped, started = asyncio.Event(), asyncio.Event()
            loop = asyncio.get_running_loop()
            for s in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(s, stopped.set)
            serving = asyncio.ensure_future(
                asyncio_serve(
                    _on_startup(arashi.app, started.set),
                    config,
                    shutdown_trigger=stopped.wait,
                )
            )
            up = await _until_started(started, serving)
            async with _announced(args, arashi, sock) if up else contextlib.nullcontext():
                await serving

        asyncio.run(asyncio_main())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        db=args.db,
        users=args.users,
        messages=args.messages,
        control=args.control,
        classes=args.classes,
        degrade=args.degrade,
        target=args.target,
        render_cost=args.render_cost,
        route_workers=args.route_workers,
        db_threads=args.db_threads,
        render_threads=args.render_threads,
    )
    sock = _bind(args.host, args.port)
    arashi = Arashi(settings)  # creates and fills the database (seconds for a large corpus)
    try:
        if args.server == "uvicorn":
            run_uvicorn(arashi, args, sock)
        else:
            run_hypercorn(arashi, args, sock)
    finally:
        sock.close()
        arashi.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
