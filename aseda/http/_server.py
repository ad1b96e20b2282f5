"""The socket layer: accept connections, read requests with h11, write responses.

SEDA's aSocket layer, over anyio sockets: each connection is one task that reads and parses
its requests, enforces the :class:`Limits`, hands each complete request to the graph with
``call()`` and writes the answer. A slow or hostile client therefore costs a task and a
socket, never a stage worker, and the graph's admission control decides who is served.
"""

from __future__ import annotations

import math
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskGroup

from .._errors import Abandoned, ConfigError, Dropped, GraphClosed, Rejected
from .._log import RateLimit, logger
from .._refusals import OnRefuse, check_on_refuse
from .._serving import listening
from ._errors import HttpError
from ._limits import Limits
from ._messages import Response, _request, parse_target
from ._pages import error_page, prefers_json, reason

if TYPE_CHECKING:
    import h11

    from .._runtime import RunningGraph

__all__ = ["HttpServer", "HttpStatistics", "serve"]

_RECEIVE = 65536  # bytes per read: one read takes a whole request head in the common case
_COALESCE = 16384  # bodies up to this size go out in the same write as the head
_LINGER = 2.0  # at most this long, read and discard what a refused client still sends
_ACCEPT_BURST = 256  # connections taken from the backlog at once, after each accept()
_NO_H11 = "aseda.http needs h11: pip install 'aseda[http]'"

# What a connection is doing, for its single cancel scope's deadline and for its timeout.
_IDLE = 0  # waiting for a request's first byte: idle_timeout
_READ = 1  # between a request's first byte and its complete body: header_timeout
_DISPATCH = 2  # the graph has the request: no deadline here (the graph's own business)
_WRITE = 3  # writing the response: write_timeout

_VERSIONS = {b"1.1": "1.1", b"1.0": "1.0"}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_NO_BODY_STATUSES = frozenset({204, 304})
# RFC 9110: a header name is a token; a value has no CR, LF or NUL, nor spaces at its ends.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(
    rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
)


@dataclass(frozen=True)
class HttpStatistics:
    """A snapshot of an :class:`HttpServer`'s counters, from :meth:`HttpServer.statistics`.

    Every count runs from the moment the server started listening.
    """

    #: connections open now (keep-alive ones included; refused ones not)
    connections_open: int
    #: connections accepted and served since the start (refused ones not included)
    connections_total: int
    #: connections refused because ``max_connections`` were open (each got a 503 and was closed)
    connections_refused: int
    #: complete, valid requests handed to the graph
    requests: int
    #: responses written, by status code (the socket layer's own answers included)
    responses: Mapping[int, int] = field(repr=False)
    #: requests the graph refused (``aseda.Rejected``, or the graph closing): answered 503
    refused: int
    #: requests the socket layer refused as malformed or too large: 400, 413, 414, 431
    bad_requests: int
    #: requests that did not arrive within ``header_timeout``: answered 408 and closed
    timeouts: int
    #: responses the client did not take within ``write_timeout``: connection dropped
    write_timeouts: int
    #: keep-alive connections closed after ``idle_timeout`` without a request (or at shutdown)
    idle_closed: int
    #: requests answered 500 (a handler raised, or returned something other than a Response)
    errors: int
    #: bytes read from clients
    bytes_received: int
    #: bytes written to clients (heads and bodies)
    bytes_sent: int

    def by_class(self) -> dict[str, int]:
        """Responses by status class: ``{"2xx": ..., "4xx": ..., "5xx": ...}`` (those seen)."""
        classes: dict[str, int] = {}
        for status, count in sorted(self.responses.items()):
            key = f"{status // 100}xx"
            classes[key] = classes.get(key, 0) + count
        return classes


class _Connection:
    """What the server needs to know of a connection to shut it down politely."""

    __slots__ = ("h11", "idle", "phase", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.idle = False  # waiting for a request's first byte: shutdown closes it at once
        self.phase = _IDLE
        self.h11: Any = None  # the h11.Connection of the request being served


class _Date:
    """The ``Date`` header's value, formatted once a second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.value = formatdate(now, usegmt=True).encode("ascii")
            self.second = now
        return self.value


class HttpServer:
    """A running HTTP server, given by ``async with aseda.http.serve(running) as server``.

    Attributes:
        host: the address it listens on.
        port: the port it listens on (the one picked, when asked for port 0).
        limits: the :class:`Limits` it enforces.
    """

    def __init__(
        self,
        running: RunningGraph,
        listeners: list[SocketListener],
        *,
        to: str | None,
        limits: Limits,
        on_refuse: OnRefuse | None,
        retry_after: float,
        server_header: str | None,
    ) -> None:
        import h11

        self._h11 = h11
        self.running = running
        self.limits = limits
        self._listeners = listeners
        self._to = to
        self._on_refuse = on_refuse
        self._retry_after = str(math.ceil(retry_after)).encode("ascii")
        self._server = server_header.encode("latin-1") if server_header else None
        self._date = _Date()
        self._reasons: dict[int, bytes] = {}
        self._log = RateLimit(1.0)
        self._open: set[_Connection] = set()
        self._closing = False
        self._all_closed: anyio.Event | None = None
        self._accept_scopes: list[anyio.CancelScope] = []
        address = listeners[0].extra(SocketAttribute.local_address)
        self.host: str = str(address[0]) if isinstance(address, tuple) else str(address)
        self.port: int = listeners[0].extra(SocketAttribute.local_port)
        # Counters: plain attributes, bumped on the connection tasks (one event loop thread).
        self._connections_total = 0
        self._connections_refused = 0
        self._requests = 0
        self._responses: dict[int, int] = {}
        self._refused = 0
        self._bad_requests = 0
        self._timeouts = 0
        self._write_timeouts = 0
        self._idle_closed = 0
        self._errors = 0
        self._bytes_received = 0
        self._bytes_sent = 0

    @property
    def url(self) -> str:
        """``http://host:port``, the server's base URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def statistics(self) -> HttpStatistics:
        """A snapshot of the server's counters (see :class:`HttpStatistics`)."""
        return HttpStatistics(
            connections_open=len(self._open),
            connections_total=self._connections_total,
            connections_refused=self._connections_refused,
            requests=self._requests,
            responses=dict(self._responses),
            refused=self._refused,
            bad_requests=self._bad_requests,
            timeouts=self._timeouts,
            write_timeouts=self._write_timeouts,
            idle_closed=self._idle_closed,
            errors=self._errors,
            bytes_received=self._bytes_received,
            bytes_sent=self._bytes_sent,
        )

    def __repr__(self) -> str:
        return f"<aseda.http.HttpServer {self.url}>"

    # Accepting ------------------------------------------------------------------------------

    async def _accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None:
        raw: socket.socket | None = listener.extra(SocketAttribute.raw_socket, None)
        with anyio.CancelScope() as scope:
            self._accept_scopes.append(scope)
            while True:
                try:
                    stream = await listener.accept()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return
                except OSError as exc:  # out of file descriptors, say: wait and go on
                    self._warn("http: accept failed", exc)
                    await anyio.sleep(0.1)
                    continue
                self._admit_connection(stream, tg)
                # Take the rest of a burst now. Each accept() costs the listener a few trips
                # through a busy event loop, so under load connections would queue in the
                # kernel's backlog, a hidden queue that makes reconnecting clients wait for
                # seconds. A non-blocking accept() drains it in one go.
                if raw is not None:
                    self._drain_backlog(raw, tg)

    def _drain_backlog(self, raw: socket.socket, tg: TaskGroup) -> None:
        for _ in range(_ACCEPT_BURST):
            try:
                sock, _address = raw.accept()
            except OSError:  # BlockingIOError: the backlog is empty
                return
            self._admit_connection(sock, tg)

    def _admit_connection(self, stream: SocketStream | socket.socket, tg: TaskGroup) -> None:
        if len(self._open) >= self.limits.max_connections:
            self._connections_refused += 1
            tg.start_soon(self._refuse_connection, stream)
            return
        # Counted here, not in the task, so a burst of accepts cannot pass the cap.
        connection = _Connection()
        self._open.add(connection)
        self._connections_total += 1
        tg.start_soon(self._connection, stream, connection)

    async def _refuse_connection(self, stream: SocketStream | socket.socket) -> None:
        """Answer 503 at once, without reading the request, and close."""
        if isinstance(stream, socket.socket):
            try:
                stream = await _wrap(stream)
            except OSError:
                return
        content_type, body = error_page(503, "Too many connections. Please try again.", False)
        head = (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: " + content_type
            + b"\r\ncontent-length: " + str(len(body)).encode("ascii")
            + b"\r\nretry-after: " + self._retry_after
            + b"\r\ndate: " + self._date.get() + b"\r\nconnection: close\r\n\r\n"
        )  # fmt: skip
        self._count(503)
        try:
            async with stream:
                with anyio.move_on_after(self.limits.write_timeout):
                    await stream.send(head + body)
                    self._bytes_sent += len(head) + len(body)
                await self._linger(stream)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _linger(self, stream: SocketStream) -> None:
        """Half-close, then read and drop what the client still sends, for a while.

        Closing with unread data makes the kernel reset the connection, which can destroy
        the error response before the client reads it.
        """
        try:
            await stream.send_eof()
            with anyio.move_on_after(min(_LINGER, self.limits.header_timeout)):
                while True:
                    await stream.receive(_RECEIVE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    # One connection -------------------------------------------------------------------------

    async def _connection(
        self, stream: SocketStream | socket.socket, connection: _Connection
    ) -> None:
        try:
            if isinstance(stream, socket.socket):
                stream = await _wrap(stream)
            async with stream:
                await self._converse(stream, connection)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            pass  # the client went away
        except Exception as exc:  # a client's trouble is never the graph's
            self._warn("http: connection failed", exc)
        finally:
            self._open.discard(connection)
            if self._all_closed is not None and not self._open:
                self._all_closed.set()

    async def _converse(self, stream: SocketStream, connection: _Connection) -> None:
        import h11

        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        connection.h11 = conn
        scope = connection.scope
        with scope:
            linger = await self._exchange(stream, connection, conn)
        conn = connection.h11  # a later request's
        if scope.cancelled_caught:
            phase = connection.phase
            if phase == _IDLE:
                self._idle_closed += 1
            elif phase == _READ:
                self._timeouts += 1
                with anyio.move_on_after(self.limits.write_timeout):
                    await self._refuse_request(conn, stream, 408, None)
            elif phase == _WRITE:
                self._write_timeouts += 1
                _reset_on_close(stream)
        elif linger:
            await self._linger(stream)

    async def _exchange(
        self, stream: SocketStream, connection: _Connection, conn: h11.Connection
    ) -> bool:
        """Serve requests until the connection must close; True to close it politely."""
        h11 = self._h11
        limits = self.limits
        NEED_DATA, Request, Data, EndOfMessage = (
            h11.NEED_DATA,
            h11.Request,
            h11.Data,
            h11.EndOfMessage,
        )
        address = stream.extra(SocketAttribute.remote_address, None)
        client = (str(address[0]), int(address[1])) if isinstance(address, tuple) else None
        scope = connection.scope
        now = anyio.current_time
        while True:
            # Read one request, head and body. --------------------------------------------
            connection.phase = _IDLE
            scope.deadline = now() + limits.idle_timeout
            event: Any = None
            head: Any = None
            body = b""
            parts: list[bytes] | None = None
            received = size = 0
            line_done = False
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    connection.phase = _WRITE
                    scope.deadline = now() + limits.write_timeout
                    await self._refuse_request(conn, stream, exc.error_status_hint, head)
                    return True
                if event is NEED_DATA:
                    if head is not None and conn.they_are_waiting_for_100_continue:
                        await stream.send(
                            conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                        )
                    if connection.phase == _IDLE:
                        if self._closing:
                            return False
                        connection.idle = True
                        try:
                            data = await stream.receive(_RECEIVE)
                        except anyio.EndOfStream:
                            return False  # closed between requests: nothing to say
                        finally:
                            connection.idle = False
                        connection.phase = _READ
                        scope.deadline = now() + limits.header_timeout
                    else:
                        try:
                            data = await stream.receive(_RECEIVE)
                        except anyio.EndOfStream:
                            data = b""  # h11 decides: a truncated request is a 400
                    self._bytes_received += len(data)
                    conn.receive_data(data)
                    if head is None and not line_done:
                        # 414 before h11's 431: is the request line already too long?
                        received += len(data)
                        if received > limits.max_target:
                            buffered = conn.trailing_data[0]
                            if buffered.find(b"\n", 0, limits.max_target + 64) >= 0:
                                line_done = True
                            elif len(buffered) > limits.max_target + 64:
                                connection.phase = _WRITE
                                scope.deadline = now() + limits.write_timeout
                                await self._refuse_request(conn, stream, 414, None)
                                return True
                    continue
                kind = type(event)
                if kind is Request:
                    head = event
                    if connection.phase == _IDLE:  # a pipelined request, already buffered
                        connection.phase = _READ
                        scope.deadline = now() + limits.header_timeout
                        received = limits.max_header_bytes + 1  # size unknown: measure it
                    status = self._check_head(event, received > limits.max_header_bytes)
                    if status:
                        connection.phase = _WRITE
                        scope.deadline = now() + limits.write_timeout
                        await self._refuse_request(conn, stream, status, event)
                        return True
                elif kind is Data:
                    if parts is None:
                        parts = [event.data]
                    else:
                        parts.append(event.data)
                    size += len(event.data)
                    if size > limits.max_body:  # a chunked body that grew too large
                        connection.phase = _WRITE
                        scope.deadline = now() + limits.write_timeout
                        await self._refuse_request(conn, stream, 413, head)
                        return True
                elif kind is EndOfMessage:
                    break
                else:  # ConnectionClosed (or PAUSED, which cannot come here)
                    return False
            if parts is not None:
                body = parts[0] if len(parts) == 1 else b"".join(parts)

            # Hand it to the graph. -------------------------------------------------------
            connection.phase = _DISPATCH
            scope.deadline = math.inf
            keep_alive = _keep_alive(head)
            status, content_type, payload, headers, close = await self._dispatch(
                head, body, client, keep_alive
            )

            # Write the answer. ----------------------------------------------------------
            connection.phase = _WRITE
            scope.deadline = now() + limits.write_timeout
            close = (
                close or self._closing or not keep_alive or bool(headers and _asks_close(headers))
            )
            await self._respond(stream, head, status, content_type, payload, headers, close)
            if close:
                # HTTP/1.0, Connection: close, or our own close. Linger, so that closing
                # does not throw away the end of the response.
                return True
            # The response was written by hand, not through h11 (a third of h11's cost per
            # request), so the next request gets a fresh h11 connection, given whatever
            # the client already sent after this one (pipelining).
            trailing, eof = conn.trailing_data
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
            connection.h11 = conn
            if trailing or eof:
                conn.receive_data(trailing)
                if eof:
                    conn.receive_data(b"")

    def _check_head(self, event: h11.Request, measure: bool) -> int:
        """The status refusing a request head (414, 431, 413), or 0 to read on.

        h11 enforces ``max_incomplete_event_size`` only on a head that arrives in pieces;
        one that came in a single read is measured here (``measure``) when it may be too big.
        """
        limits = self.limits
        if len(event.target) > limits.max_target:
            return 414
        if measure:
            size = len(event.method) + len(event.target) + 12
            for name, value in event.headers:
                size += len(name) + len(value) + 4
            if size > limits.max_header_bytes:
                return 431
        for name, value in event.headers:
            if name == b"content-length":
                # h11 checked it is digits: a number, perhaps a huge one.
                if int(value) > limits.max_body:
                    return 413
                break
        return 0

    async def _dispatch(
        self,
        head: h11.Request,
        body: bytes,
        client: tuple[str, int] | None,
        keep_alive: bool,
    ) -> tuple[int, bytes | str | None, bytes, Sequence[tuple[str, str]], bool]:
        """Call the graph: ``(status, content type, body, extra headers, close)``."""
        method = _METHODS.get(head.method) or head.method.decode("ascii")
        target = head.target.decode("ascii")  # h11 allows only visible ASCII here
        split = parse_target(method, target)
        if split is None:
            self._bad_requests += 1
            return self._page(400, None, head, close=True)
        version = _VERSIONS.get(head.http_version) or head.http_version.decode("ascii")
        request = _request(
            method, target, split[0], split[1], head.headers, body, version, client, keep_alive
        )
        self._requests += 1
        try:
            value = await self.running.call(request, to=self._to, on_refuse=self._on_refuse)
        except Rejected:
            self._refused += 1
            return self._page(503, None, head, retry=True)
        except HttpError as exc:
            page = self._page(exc.status, exc.message or None, head)
            return page[0], page[1], page[2], exc.headers, False
        except Dropped:
            return self._page(404, None, head)
        except (GraphClosed, Abandoned):
            self._refused += 1
            return self._page(503, None, head, retry=True, close=True)
        except Exception as exc:
            self._fail(request, "http: handler failed; answered 500", exc)
            return self._page(500, None, head)
        if not isinstance(value, Response):
            self._fail(
                request,
                "http: the graph's answer is not an aseda.http.Response; answered 500",
                TypeError(f"got {type(value).__name__}"),
            )
            return self._page(500, None, head)
        return value.status, value.content_type, value.body, value.headers, False

    def _page(
        self,
        status: int,
        message: str | None,
        head: h11.Request | None,
        *,
        retry: bool = False,
        close: bool = False,
    ) -> tuple[int, bytes, bytes, Sequence[tuple[str, str]], bool]:
        as_json = False
        if head is not None:
            for name, value in head.headers:
                if name == b"accept":
                    as_json = prefers_json(value.decode("latin-1"))
                    break
        content_type, body = error_page(status, message, as_json)
        headers = (("retry-after", self._retry_after.decode("ascii")),) if retry else ()
        return status, content_type, body, headers, close

    def _fail(self, request: Any, message: str, exc: Exception) -> None:
        """Count a 500 and log it, at most one line a second."""
        self._errors += 1
        held = self._log.allow()
        if held is not None:
            method, target = request.method, request.target[:200]
            if isinstance(method, bytes):  # an h11 request head
                method, target = method.decode("latin-1"), target.decode("latin-1")
            logger.error(
                message,
                method=method,
                target=target,
                error=repr(exc),
                suppressed=held,
                exc_info=exc,
            )

    def _warn(self, message: str, exc: BaseException) -> None:
        held = self._log.allow()
        if held is not None:
            logger.warning(message, error=repr(exc), suppressed=held)

    def _count(self, status: int) -> None:
        self._responses[status] = self._responses.get(status, 0) + 1

    # Writing --------------------------------------------------------------------------------

    async def _respond(
        self,
        stream: SocketStream,
        head: h11.Request,
        status: int,
        content_type: bytes | str | None,
        body: bytes,
        extra: Sequence[tuple[str, str]],
        close: bool,
    ) -> None:
        no_body = status in _NO_BODY_STATUSES
        try:
            data = self._head(status, content_type, len(body), extra, close, no_body)
        except (UnicodeError, TypeError, ValueError) as exc:
            # A header the application built is not valid HTTP (a CR or LF in a value, a
            # name that is not a token): nothing of it is sent.
            self._fail(head, "http: the response's headers are invalid; answered 500", exc)
            status, page_type, body, extra, _ = self._page(500, None, head)
            no_body = False
            data = self._head(status, page_type, len(body), extra, close, no_body)
        self._count(status)
        if no_body or head.method == b"HEAD" or not body:
            await stream.send(data)
            self._bytes_sent += len(data)
            return
        if type(body) is not bytes:
            body = bytes(body)
        if len(body) <= _COALESCE:
            await stream.send(data + body)
        else:
            await stream.send(data)
            await stream.send(body)
        self._bytes_sent += len(data) + len(body)

    def _head(
        self,
        status: int,
        content_type: bytes | str | None,
        length: int,
        extra: Sequence[tuple[str, str]],
        close: bool,
        no_body: bool,
    ) -> bytes:
        """The response head, as bytes; every header is checked here, before anything is sent.

        Written by hand rather than by h11: h11's checks of headers we build ourselves
        cost more than the rest of the response. Those an application gives are checked
        against RFC 9110's grammar (a token name, a value without CR, LF or NUL).
        """
        phrase = self._reasons.get(status)
        if phrase is None:
            phrase = self._reasons[status] = reason(status).encode("ascii")
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
        if not no_body:
            parts.append(b"content-length: %d\r\n" % length)
        if content_type is not None:
            if isinstance(content_type, str):
                content_type = content_type.encode("latin-1")
            if not _FIELD_VALUE.fullmatch(content_type):
                raise ValueError(f"invalid content type {content_type!r}")
            parts.append(b"content-type: " + content_type + b"\r\n")
        ours = True
        if extra:
            names = set()
            for name, value in extra:
                lower = name.lower()
                if lower == "connection":
                    continue  # its "close" was heeded (_asks_close); the server says it
                if lower in ("content-length", "transfer-encoding"):
                    raise ValueError(f"the server sets the {name!r} header itself")
                names.add(lower)
                raw_name, raw_value = name.encode("ascii"), value.encode("latin-1")
                if not _TOKEN.fullmatch(raw_name) or not _FIELD_VALUE.fullmatch(raw_value):
                    raise ValueError(f"invalid response header {name!r}: {value!r}")
                parts.append(raw_name + b": " + raw_value + b"\r\n")
            ours = "date" not in names and "server" not in names
        if ours:
            parts.append(b"date: " + self._date.get() + b"\r\n")
            if self._server is not None:
                parts.append(b"server: " + self._server + b"\r\n")
        if close:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    async def _refuse_request(
        self,
        conn: h11.Connection,
        stream: SocketStream,
        status: int,
        head: h11.Request | None,
    ) -> None:
        """Answer a request the socket layer refuses (4xx); the caller closes."""
        h11 = self._h11
        if status != 408:
            self._bad_requests += 1
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is already on its way: nothing more can be said
        _, content_type, body, _, _ = self._page(status, None, head)
        headers = [
            (b"content-type", content_type),
            (b"content-length", b"%d" % len(body)),
            (b"date", self._date.get()),
            (b"connection", b"close"),
        ]
        if self._server is not None:
            headers.append((b"server", self._server))
        phrase = reason(status).encode("ascii")
        try:
            data = conn.send(h11.Response(status_code=status, headers=headers, reason=phrase))
            assert data is not None
            if head is None or head.method != b"HEAD":
                data += conn.send(h11.Data(data=body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # h11 cannot answer in this state
            return
        self._count(status)
        await stream.send(data)
        self._bytes_sent += len(data)

    # Shutdown -------------------------------------------------------------------------------

    async def _shutdown(self, tg: TaskGroup) -> None:
        """Stop accepting, close idle connections, give requests in flight time to finish."""
        self._closing = True
        for scope in self._accept_scopes:
            scope.cancel()
        for connection in list(self._open):
            if connection.idle:
                connection.scope.cancel()
        if self._open:
            self._all_closed = anyio.Event()
            with anyio.move_on_after(self.limits.shutdown_timeout):
                await self._all_closed.wait()
        tg.cancel_scope.cancel()


def _keep_alive(head: h11.Request) -> bool:
    """h11's rule: HTTP/1.1 without ``Connection: close`` keeps the connection open."""
    if head.http_version != b"1.1":
        return False
    for name, value in head.headers:
        if name == b"connection" and b"close" in value.lower():
            return False
    return True


def _asks_close(headers: Sequence[tuple[str, str]]) -> bool:
    """Whether a response's own headers ask to close the connection (``Connection: close``)."""
    return any(name.lower() == "connection" and "close" in value.lower() for name, value in headers)


async def _wrap(sock: socket.socket) -> SocketStream:
    """A socket taken from the backlog by a non-blocking accept(), as anyio's listener would."""
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await SocketStream.from_socket(sock)
    except BaseException:
        sock.close()
        raise


def _reset_on_close(stream: SocketStream) -> None:
    """Make closing the socket reset the connection, discarding what the kernel still holds.

    For a client that stopped reading: a plain close would leave the kernel holding (and
    retrying) up to the whole send buffer for it, megabytes per connection.
    """
    sock = stream.extra(SocketAttribute.raw_socket, None)
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, AttributeError, ValueError):  # pragma: no cover - a socket that cannot
        pass


@asynccontextmanager
async def serve(
    running: RunningGraph,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    to: str | None = None,
    limits: Limits | None = None,
    on_refuse: OnRefuse | None = "shed",
    retry_after: float = 1.0,
    server_header: str | None = "aseda",
) -> AsyncIterator[HttpServer]:
    """Serve HTTP/1.1 on ``host:port`` inside the block, answering each request with the graph.

    ``async with aseda.http.serve(running) as server:`` listens at once. Each connection is a
    task of its own that reads requests (keep-alive, pipelining, HTTP/1.0, HEAD), enforces
    ``limits``, and turns each complete request into an :class:`aseda.http.Request` event:
    ``await running.call(request, to=to, on_refuse=on_refuse)``, whose final value must be an
    :class:`aseda.http.Response`. A refusal (:class:`aseda.Rejected`) is answered 503 with
    ``Retry-After``; :class:`aseda.http.HttpError` with its status; :class:`aseda.Dropped`
    with 404; any other exception with 500 (logged, at most once a second).

    Leaving the block stops accepting, closes idle keep-alive connections, lets requests in
    flight finish (at most ``limits.shutdown_timeout`` seconds) and then cancels what is
    left; no task outlives the block. Leave it before the graph's own block, so the graph
    can still answer those last requests.

    Args:
        running: the running graph that answers requests.
        host: the address to listen on.
        port: the port; 0 picks a free one (read it from ``server.port``).
        to: the stage requests enter (None: the graph's entry).
        limits: sizes, timeouts and the connection cap (:class:`aseda.http.Limits`).
        on_refuse: what a refused request becomes, as for ``call()``: ``"shed"`` answers 503
            at once; ``"wait"`` makes the request wait for room; None uses the stage's own.
        retry_after: the ``Retry-After`` seconds sent with a 503 (rounded up).
        server_header: the ``Server`` header's value (None: no header).

    Yields:
        The server: ``host``, ``port``, ``url``, ``statistics()``.

    Raises:
        OSError: the address cannot be listened on (in use, say).
        ConfigError: no stage named ``to``, an invalid ``on_refuse`` or ``retry_after``.
        ImportError: h11 is not installed.
    """
    try:
        import h11
    except ImportError as exc:
        raise ImportError(_NO_H11) from exc
    del h11
    if limits is None:
        limits = Limits()
    elif not isinstance(limits, Limits):
        raise ConfigError(f"limits must be an aseda.http.Limits, not {limits!r}")
    running.stage_run(to)  # ConfigError for a name that is not a stage
    if on_refuse is not None:
        check_on_refuse(on_refuse, "http.serve")
    if isinstance(retry_after, bool) or not (
        isinstance(retry_after, (int, float)) and 0 <= retry_after < math.inf
    ):
        raise ConfigError(f"retry_after must be a number of seconds, not {retry_after!r}")

    def build(listeners: list[SocketListener]) -> HttpServer:
        return HttpServer(
            running,
            listeners,
            to=to,
            limits=limits,
            on_refuse=on_refuse,
            retry_after=retry_after,
            server_header=server_header,
        )

    async with listening(host, port, build) as server:
        yield server
