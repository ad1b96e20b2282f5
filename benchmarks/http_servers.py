"""The baseline static file servers that benchmarks/http.py compares Haboob with.

Each kind runs as its own process, serving the files under ``--root``, and, once listening,
prints exactly one line ``listening on http://HOST:PORT`` (flushed) to stdout, like Haboob;
it runs until SIGINT or SIGTERM and exits 0::

    python -m benchmarks.http_servers threads --root /tmp/docroot --port 0

Kinds:

* ``threads``: Python's ``http.server.ThreadingHTTPServer``, a thread per connection with no
  cap (the "Apache without a cap" model), HTTP/1.1 keep-alive.
* ``pool150``: a bounded pool of 150 threads (the Haboob paper's Apache): one thread accepts
  connections into a queue; each worker serves one connection at a time, keep-alive included,
  so a connection waits in the queue until a worker is free. ``--threads`` changes the size.
* ``uvicorn``: uvicorn serving a Starlette app with ``StaticFiles(directory=root)``, on uvloop
  and httptools when they are installed (h11 otherwise), what a Python user would pick.
* ``trivial``: not a file server; answers every request with the same 2-byte body as fast as
  one uvloop event loop can. The benchmark drives it to measure the load generator's own
  ceiling.

The two thread servers share one handler: ``SimpleHTTPRequestHandler`` speaking HTTP/1.1 (a
``Content-Length`` on every answer, so connections stay open between requests), with no access
log. All listen with a backlog of ``--backlog`` (4096) connections, enough for 1024 clients
connecting at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import os
import queue
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import HTTPServer, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "Handler", "PoolHTTPServer", "main"]

KINDS = ("threads", "pool150", "uvicorn", "trivial")
#: the listen backlog of every kind (the kernel caps it at net.core.somaxconn)
BACKLOG = 4096
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Handler(SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` with HTTP/1.1 keep-alive and no access log."""

    protocol_version = "HTTP/1.1"
    # The head and the body go out in separate writes: with Nagle's algorithm the body
    # waits for the client's delayed ACK of the head (40 ms). Real servers set TCP_NODELAY.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # an access log line per request would cost more than serving small files


class _ThreadServer(ThreadingHTTPServer):
    request_queue_size = BACKLOG
    daemon_threads = True
    block_on_close = False


class PoolHTTPServer(HTTPServer):
    """An HTTP server whose connections are served by a fixed pool of worker threads.

    The listening thread accepts every connection at once and queues it; each of the
    ``threads`` workers takes the next queued connection and serves it to the end (all its
    keep-alive requests) before taking another, as Apache's bounded process pool does.
    """

    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], handler: Any, threads: int) -> None:
        super().__init__(address, handler)
        self._queue: queue.SimpleQueue[tuple[socket.socket, Any]] = queue.SimpleQueue()
        for k in range(threads):
            threading.Thread(target=self._work, name=f"pool-{k}", daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:
        self._queue.put((request, client_address))

    def _work(self) -> None:
        while True:
            request, client_address = self._queue.get()
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)


def _announce(host: str, port: int) -> None:
    print(f"listening on http://{host}:{port}", flush=True)


def _serve_http_server(server: HTTPServer, host: str) -> None:
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    _announce(host, server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.create_server((host, port), backlog=BACKLOG)
    sock.setblocking(False)
    return sock


def _run_uvicorn(root: Path, host: str, port: int, keep_alive: float) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    app = Starlette(routes=[Mount("/", app=StaticFiles(directory=root))])
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    have_httptools = importlib.util.find_spec("httptools") is not None
    config = uvicorn.Config(
        app,
        loop="uvloop" if have_uvloop else "asyncio",
        http="httptools" if have_httptools else "h11",
        lifespan="off",
        log_level="warning",
        access_log=False,
        backlog=BACKLOG,
        timeout_keep_alive=int(keep_alive) if keep_alive >= 1 else 1,
    )
    sock = _listen(host, port)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                _announce(host, sock.getsockname()[1])

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own re-raises the signal after the shutdown (exit status 143 for a
            # SIGTERM); the benchmark's servers exit 0, like Haboob.
            previous = {s: signal.signal(s, self.handle_exit) for s in _STOP_SIGNALS}
            try:
                yield
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    if not have_httptools:
        print("http_servers: httptools is not installed; uvicorn runs on h11", file=sys.stderr)
    Server(config).run(sockets=[sock])


class _Trivial(asyncio.Protocol):
    """Answers each request (a head ending in a blank line, no body) with a fixed reply."""

    REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
    CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def connection_made(self, transport: Any) -> None:
        self.transport: asyncio.Transport = transport  # uvloop's is not an asyncio.Transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end].lower(), self.buffer[end + 4 :]
            if b"connection: close" in head:
                self.transport.write(self.CLOSE)
                self.transport.close()
                return
            self.transport.write(self.REPLY)


def _run_trivial(host: str, port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in _STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        sock = _listen(host, port)
        server = await loop.create_server(_Trivial, sock=sock, backlog=BACKLOG)
        _announce(host, sock.getsockname()[1])
        await stop.wait()
        server.close()

    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http_servers",
        description="A baseline static file server for benchmarks/http.py.",
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--root", type=Path, default=Path("."), help="the document root")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--threads", type=int, default=150, help="pool150's pool size (150)")
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=5.0,
        help="uvicorn's idle keep-alive timeout in seconds (its default, 5)",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.kind != "trivial" and not root.is_dir():
        parser.error(f"--root {args.root} is not a directory")
    if args.kind == "uvicorn":
        _run_uvicorn(root, args.host, args.port, args.keep_alive)
    elif args.kind == "trivial":
        _run_trivial(args.host, args.port)
    else:
        handler = functools.partial(Handler, directory=os.fspath(root))
        address = (args.host, args.port)
        if args.kind == "threads":
            server: HTTPServer = _ThreadServer(address, handler)
        else:
            server = PoolHTTPServer(address, handler, args.threads)
        _serve_http_server(server, args.host)
    return 0


if __name__ == "__main__":
    sys.exit(main())
