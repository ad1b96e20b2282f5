"""A two-stage graph served over HTTP with aseda.http.

    .venv/bin/python examples/http_hello.py [--port 8080] [--backend asyncio|uvloop|trio]
                                            [--requests N]

Then open http://127.0.0.1:8080/hello/ada (or curl it). ``parse`` reads the name from the
path and sheds load past 64 queued requests (503 with Retry-After); ``render`` builds the
page. The server stops after N requests (``--requests``) or on Ctrl-C, lets the last ones
finish, and prints its own and the graph's statistics.
"""

from __future__ import annotations

import argparse
import html
import signal
import sys
from typing import Any

import anyio

import aseda
from aseda import http


class Quota:
    """Counts the requests the graph has seen; ``done`` is set at the N-th (or at Ctrl-C)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.seen = 0
        self.done = anyio.Event()

    def count(self) -> None:
        self.seen += 1
        if self.limit is not None and self.seen >= self.limit:
            self.done.set()


quota = Quota(None)


@aseda.stage(capacity=256, admission=aseda.Threshold(64))
async def parse(request: http.Request) -> Any:
    """Find the name to greet: ``/`` greets the world, ``/hello/NAME`` greets NAME."""
    quota.count()
    if request.method not in ("GET", "HEAD"):
        raise http.HttpError(405, "Only GET and HEAD here.", headers=[("allow", "GET, HEAD")])
    if request.path == "/":
        return "world"
    if request.path.startswith("/hello/") and len(request.path) > len("/hello/"):
        return request.path.removeprefix("/hello/")
    return aseda.DROP  # no final value: the server answers 404


@aseda.stage(workers=2)
async def render(name: str) -> http.Response:
    """The page: the graph's final value, which the server sends."""
    return http.Response.html(f"<!doctype html><h1>Hello, {html.escape(name)}!</h1>\n")


graph = aseda.Graph(parse >> render)


async def main(host: str, port: int, requests: int | None) -> None:
    global quota
    quota = Quota(requests)

    async def stop_on_signal() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                quota.done.set()
                return

    async with graph.run() as running:
        async with http.serve(running, host=host, port=port) as server:
            print(f"listening on {server.url}", flush=True)
            async with anyio.create_task_group() as tg:
                if sys.platform != "win32":
                    tg.start_soon(stop_on_signal)
                await quota.done.wait()
                tg.cancel_scope.cancel()
        # serve() has returned: requests in flight were answered, connections closed
        stats = server.statistics()
        print(f"{stats.requests} requests on {stats.connections_total} connections")
        print("responses:", dict(sorted(stats.responses.items())))
    print(running.stats())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backend", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--requests", type=int, default=None, help="stop after N requests")
    args = parser.parse_args()
    backend, options = args.backend, {}
    if backend == "uvloop":
        backend, options = "asyncio", {"use_uvloop": True}
    anyio.run(main, args.host, args.port, args.requests, backend=backend, backend_options=options)
