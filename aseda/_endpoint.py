"""An opt-in HTTP endpoint serving a running graph's statistics (JSON and Prometheus text).

A small HTTP/1.1 server on an anyio TCP listener, parsed with h11: every connection gets one
response and is closed. It runs in its own task group beside the graph; whatever a client
sends or fails to send, the graph never sees an error from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup

from ._bottleneck import find_bottleneck
from ._log import RateLimit, logger
from ._serving import listening
from ._stats import GraphStats

if TYPE_CHECKING:
    import h11
    from prometheus_client.registry import CollectorRegistry

    from ._runtime import RunningGraph

__all__ = ["StatsEndpoint", "serve_stats"]

_RECEIVE = 8192  # bytes per read
_LINGER = 1.0  # seconds to wait for the client's close after the response

_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>aseda</title></head>
<body><h1>aseda</h1>
<ul>
<li><a href="/stats">/stats</a>: every stage's statistics, as JSON</li>
<li><a href="/metrics">/metrics</a>: the same, as Prometheus text</li>
</ul>
<p>Watch it live: <code>aseda top {url}</code></p>
</body></html>
"""

_NO_H11 = "aseda's stats endpoint needs h11: pip install 'aseda[serve]'"
_NO_PROMETHEUS = (
    "/metrics needs prometheus_client, which is not installed: pip install 'aseda[prometheus]'\n"
)


def stats_document(running: RunningGraph, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A running graph's stats as a JSON-safe document: ``stats().to_dict()`` (or ``data``)
    plus ``"graph"`` (``"entry"``, ``"stages"``, ``"edges"``); NaN and infinities as None."""
    if data is None:
        data = running.stats().to_dict()
    graph = running.graph
    data["graph"] = {
        "entry": graph.entry,
        "stages": [s.name for s in graph.stages],
        "edges": [
            {"source": e.source, "target": e.target, "kind": e.kind, "back": e.back}
            for e in graph.edges
        ],
    }
    return cast("dict[str, Any]", _strict(data))


class StatsEndpoint:
    """A running stats endpoint, given by ``async with aseda.serve_stats(running)``.

    Routes: ``GET /stats`` (the JSON snapshot), ``GET /metrics`` (Prometheus text, if
    prometheus_client is installed) and ``GET /`` (an index). ``HEAD`` works too.
    """

    def __init__(
        self,
        running: RunningGraph,
        listeners: list[SocketListener],
        *,
        timeout: float,
        max_request_size: int,
        max_connections: int,
        registry: CollectorRegistry | None,
    ) -> None:
        self.running = running
        self.timeout = timeout
        self.max_request_size = max_request_size
        self.max_connections = max_connections
        self._listeners = listeners
        self._registry = registry
        self._own_registry: CollectorRegistry | None = None
        self._previous: GraphStats | None = None
        self._connections = 0
        self._log = RateLimit(1.0)
        address = listeners[0].extra(SocketAttribute.local_address)
        #: the address and port the endpoint listens on
        self.host: str = str(address[0]) if isinstance(address, tuple) else str(address)
        self.port: int = listeners[0].extra(SocketAttribute.local_port)

    @property
    def base_url(self) -> str:
        """``http://host:port``, without a path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The JSON snapshot's URL, ``http://host:port/stats`` (what ``aseda top`` takes)."""
        return f"{self.base_url}/stats"

    @property
    def metrics_url(self) -> str:
        """The Prometheus text's URL, ``http://host:port/metrics``."""
        return f"{self.base_url}/metrics"

    @property
    def connections(self) -> int:
        """Connections open now."""
        return self._connections

    def __repr__(self) -> str:
        return f"<aseda.StatsEndpoint {self.url}>"

    # Serving --------------------------------------------------------------------------------

    async def _shutdown(self, tg: TaskGroup) -> None:
        """Leaving ``serve_stats``'s block: stop at once (a stats request is not worth a wait)."""
        tg.cancel_scope.cancel()

    async def _accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:  # out of file descriptors, say: wait and go on
                self._warn("stats endpoint: accept failed", exc)
                await anyio.sleep(0.1)
                continue
            tg.start_soon(self._connection, stream)

    async def _connection(self, stream: SocketStream) -> None:
        self._connections += 1
        try:
            async with stream:
                await self._converse(stream)
        except Exception as exc:  # a client's trouble is never the graph's
            self._warn("stats endpoint: connection failed", exc)
        finally:
            self._connections -= 1

    def _warn(self, message: str, exc: BaseException) -> None:
        held = self._log.allow()
        if held is not None:
            logger.warning(message, error=repr(exc), suppressed=held)

    async def _converse(self, stream: SocketStream) -> None:
        import h11

        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_request_size)
        if self._connections > self.max_connections:
            await self._respond(conn, stream, 503, "text/plain", b"too many connections\n")
            return
        request: h11.Request | None = None
        with anyio.move_on_after(self.timeout) as scope:
            try:
                request = await self._receive_request(conn, stream)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                await self._respond(conn, stream, status, "text/plain", f"{exc}\n".encode())
                return
            if request is None:
                return  # the client closed without asking
            status, ctype, body = self._route(request)
            method = request.method.decode("ascii", "replace")
            await self._respond(conn, stream, status, ctype, body, method=method)
        if scope.cancelled_caught and request is None:  # too slow to ask: tell it so
            with anyio.move_on_after(_LINGER):
                await self._respond(conn, stream, 408, "text/plain", b"request timed out\n")

    async def _receive_request(
        self, conn: h11.Connection, stream: SocketStream
    ) -> h11.Request | None:
        import h11

        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive(_RECEIVE)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                return event
            else:  # ConnectionClosed; nothing else can come before a request
                return None

    async def _respond(
        self,
        conn: h11.Connection,
        stream: SocketStream,
        status: int,
        ctype: str,
        body: bytes,
        *,
        method: str = "GET",
    ) -> None:
        """Send one response if the connection can still take one, then close politely."""
        import h11

        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        headers = [
            ("content-type", ctype),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            ("connection", "close"),
            ("server", "aseda"),
        ]
        if status == 405:
            headers.append(("allow", "GET, HEAD"))
        try:
            data = conn.send(h11.Response(status_code=status, headers=headers))
            if method != "HEAD":
                data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
            await stream.send(data)
            await stream.send_eof()
            # Read whatever the client still sends until it closes, so the close does not
            # reset the connection under a response it has not read yet.
            with anyio.move_on_after(min(_LINGER, self.timeout)):
                while True:
                    await stream.receive(_RECEIVE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        except h11.LocalProtocolError:
            pass

    # Routes ---------------------------------------------------------------------------------

    def _route(self, request: h11.Request) -> tuple[int, str, bytes]:
        if request.method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        try:
            if path == "/stats":
                body = json.dumps(self.snapshot(), allow_nan=False, indent=1).encode()
                return 200, "application/json", body
            if path == "/metrics":
                return self._metrics(_header(request, b"accept"))
            if path in ("/", "/index.html"):
                return 200, "text/html; charset=utf-8", _INDEX.format(url=self.url).encode()
        except Exception as exc:
            self._warn("stats endpoint: request failed", exc)
            return 500, "text/plain", f"internal error: {exc!r}\n".encode()
        return 404, "text/plain", f"no such page: {path[:200]}; try /stats or /metrics\n".encode()

    def snapshot(self) -> dict[str, Any]:
        """The JSON document ``GET /stats`` serves.

        The stats' dict (:meth:`aseda.GraphStats.to_dict`), plus ``"bottleneck"`` (the
        verdict of :func:`aseda.find_bottleneck` against the snapshot served before:
        ``{"stage", "reason", "score"}``, or None) and ``"graph"`` (``"entry"``,
        ``"stages"``, ``"edges"``).
        """
        stats = self.running.stats()
        graph = self.running.graph
        data = stats.to_dict()
        data["bottleneck"] = None
        try:
            found = find_bottleneck(stats, self._previous, graph=graph)
        except Exception as exc:  # a verdict is a nicety; the snapshot is what matters
            self._warn("stats endpoint: finding the bottleneck failed", exc)
        else:
            if found is not None:
                data["bottleneck"] = {
                    "stage": found.stage,
                    "reason": found.reason,
                    "score": found.score,
                }
        self._previous = stats
        return stats_document(self.running, data)

    def _metrics(self, accept: str) -> tuple[int, str, bytes]:
        try:
            import prometheus_client
            from prometheus_client.exposition import choose_encoder
        except ImportError:
            return 404, "text/plain", _NO_PROMETHEUS.encode()
        del prometheus_client
        registry = self._registry
        if registry is None:
            if self._own_registry is None:
                from prometheus_client.registry import CollectorRegistry

                from ._prometheus import register_prometheus

                self._own_registry = CollectorRegistry()
                register_prometheus(self.running, self._own_registry)
            registry = self._own_registry
        encoder, ctype = choose_encoder(accept)
        return 200, ctype, encoder(registry)


def _header(request: h11.Request, name: bytes) -> str:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return ""


def _strict(value: Any) -> Any:
    """Make a value strict JSON: nan becomes None, infinities strings (as to_dict does)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


@asynccontextmanager
async def serve_stats(
    running: RunningGraph,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    connection_timeout: float = 10.0,
    max_request_size: int = 16384,
    max_connections: int = 64,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[StatsEndpoint]:
    """Serve a running graph's statistics over HTTP inside the block.

    ``async with aseda.serve_stats(running) as endpoint:`` listens at once;
    ``endpoint.url`` is the JSON snapshot's address, for ``aseda top`` or a browser.
    ``GET /stats`` answers the snapshot (:meth:`aseda.GraphStats.to_dict`, plus ``"graph"``:
    its entry, stages and edges), ``GET /metrics`` Prometheus text (404 if
    prometheus_client is not installed), ``GET /`` an index; anything else is 404. Each
    connection gets one response and is closed. Leaving the block stops the server.

    The endpoint is opt-in and unauthenticated: keep it on a loopback or private address.

    Args:
        running: the running graph to serve (a stopped one serves its final snapshot).
        host: the address to listen on.
        port: the port; 0 picks a free one (read it from ``endpoint.port``).
        connection_timeout: seconds a client has to send its request, and again to take the
            response; a slower client gets 408 (or nothing) and is disconnected.
        max_request_size: the largest request head accepted, in bytes (larger: 431).
        max_connections: connections served at once; more are answered 503 at once.
        registry: the prometheus_client registry ``/metrics`` serves; by default a private
            one holding only this graph's collector.

    Yields:
        The endpoint: ``url``, ``metrics_url``, ``host``, ``port``.

    Raises:
        OSError: the address cannot be listened on (in use, say).
        ImportError: h11 is not installed.
    """
    try:
        import h11
    except ImportError as exc:
        raise ImportError(_NO_H11) from exc
    del h11

    def build(listeners: list[SocketListener]) -> StatsEndpoint:
        return StatsEndpoint(
            running,
            listeners,
            timeout=connection_timeout,
            max_request_size=max_request_size,
            max_connections=max_connections,
            registry=registry,
        )

    async with listening(host, port, build) as endpoint:
        yield endpoint
