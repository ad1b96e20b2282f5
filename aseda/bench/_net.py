"""Targets that drive a network server over real sockets: HTTP/1.1 GET (h11) and raw TCP.

Both keep a pool of open connections per client: a request takes one of its client's idle
connections (or opens one), and gives it back when the exchange leaves it reusable. After
``requests_per_connection`` requests a connection is closed and the client's next request
reconnects, like the Haboob benchmark's clients, which reconnect every 5 requests. A closed-loop
client has one request in flight at a time, so it uses one connection; the requests of an
open-loop run share their client ids, so concurrent ones open as many connections as they need.

Use a target in ``async with`` (or call :meth:`aclose`) so that its idle connections are
closed at the end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteStream

from ._targets import Outcome, TargetResult

__all__ = ["HttpTarget", "TcpTarget"]

C = TypeVar("C", bound="_Connection")
P = TypeVar("P", bound="_PooledTarget[Any]")

_HttpStale = (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError)


class _Connection:
    """An open socket and how many requests it carried."""

    __slots__ = ("received", "reusable", "stream", "uses")

    def __init__(self, stream: SocketStream) -> None:
        self.stream = stream
        self.uses = 0
        #: whether the current request got any byte of its answer
        self.received = False
        #: False once the server said it closes the connection after this answer
        self.reusable = True

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self.stream)


class _PooledTarget(ABC, Generic[C]):
    """The connection pool and request loop shared by the socket targets."""

    #: retry a request once on a fresh connection when a reused one turns out closed by the
    #: server before any byte of the answer came back (safe for idempotent requests only)
    retry_stale: bool = False

    def __init__(
        self,
        host: str,
        port: int,
        *,
        requests_per_connection: int | None,
        timeout: float | None,
    ) -> None:
        if requests_per_connection is not None and requests_per_connection < 1:
            raise ValueError(
                f"requests_per_connection must be >= 1 or None, not {requests_per_connection!r}"
            )
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 or None, not {timeout!r}")
        self.host = host
        self.port = port
        self.requests_per_connection = requests_per_connection
        self.timeout = timeout
        #: connections opened so far
        self.connections = 0
        #: requests that got an answer so far (any status or reply)
        self.answered = 0
        self._idle: dict[int, list[C]] = {}
        self._open: set[C] = set()
        self._closed = False

    @abstractmethod
    def _wrap(self, stream: SocketStream) -> C:
        """A new connection object around a connected socket."""

    @abstractmethod
    async def _exchange(self, conn: C, client_id: int, seq: int, last: bool) -> TargetResult:
        """Send one request on ``conn`` and read its answer; raise if ``conn`` is unusable.

        ``last`` says that the connection will be closed after this request. Sets
        ``conn.received`` once any byte of the answer has come back, and clears
        ``conn.reusable`` if the connection cannot carry another request.
        """

    async def _connect(self) -> C:
        stream = await anyio.connect_tcp(self.host, self.port)
        self.connections += 1
        conn = self._wrap(stream)
        self._open.add(conn)
        return conn

    async def _discard(self, conn: C) -> None:
        self._open.discard(conn)
        await conn.aclose()

    def _deadline(self) -> AbstractContextManager[object]:
        return anyio.fail_after(self.timeout) if self.timeout is not None else nullcontext()

    async def __call__(self, client_id: int, seq: int) -> TargetResult:
        """Send request ``seq`` of client ``client_id`` and return its outcome.

        Raises:
            RuntimeError: the target was closed.
            OSError: the connection could not be made or broke (an error outcome).
            TimeoutError: no answer within ``timeout`` seconds (an error outcome).
        """
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        with self._deadline():
            idle = self._idle.get(client_id)
            conn = idle.pop() if idle else None
            if conn is not None:
                try:
                    return await self._request(conn, client_id, seq)
                except self._stale_errors():
                    if not self.retry_stale or conn.received:
                        raise
                    # The server had closed the idle connection: once more, on a fresh one.
            return await self._request(await self._connect(), client_id, seq)
        raise AssertionError("unreachable")  # pragma: no cover - for mypy

    async def _request(self, conn: C, client_id: int, seq: int) -> TargetResult:
        limit = self.requests_per_connection
        conn.uses += 1
        conn.received = False
        try:
            result = await self._exchange(
                conn, client_id, seq, last=limit is not None and conn.uses >= limit
            )
        except BaseException:
            await self._discard(conn)
            raise
        self.answered += 1
        if conn.reusable and (limit is None or conn.uses < limit) and not self._closed:
            self._idle.setdefault(client_id, []).append(conn)
        else:
            await self._discard(conn)
        return result

    def _stale_errors(self) -> tuple[type[BaseException], ...]:
        return _HttpStale

    async def aclose(self) -> None:
        """Close every open connection; later requests raise RuntimeError."""
        self._closed = True
        self._idle.clear()
        while self._open:
            await self._discard(self._open.pop())

    async def __aenter__(self: P) -> P:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _HttpConnection(_Connection):
    __slots__ = ("h11",)

    def __init__(self, stream: SocketStream) -> None:
        import h11

        super().__init__(stream)
        self.h11 = h11.Connection(h11.CLIENT)


class HttpTarget(_PooledTarget[_HttpConnection]):
    """A target that sends an HTTP/1.1 GET per request to a server, with keep-alive.

    Outcomes: a status in ``refused_statuses`` (503 by default) is refused (detail
    ``"HTTP 503"``); any other status of 400 or more is an error (``"HTTP 500"``); anything
    else is served. A refused connection, a connection that breaks, a malformed answer or
    the ``timeout`` is an error (the exception's type is the detail). A reused keep-alive
    connection that the server had closed is retried once on a fresh one, as browsers do.
    Needs h11 (the ``bench`` extra).

    Example::

        async with HttpTarget("127.0.0.1", 8080, "/index.html",
                              requests_per_connection=5) as target:
            report = await closed_loop(target, clients=64, duration=30, think_time=0.020)

    Attributes:
        connections: connections opened so far.
        answered: requests that got a complete answer so far.
        bytes_received: body bytes received so far.
    """

    retry_stale = True

    def __init__(
        self,
        host: str,
        port: int,
        path: str | Callable[[int, int], str] = "/",
        *,
        requests_per_connection: int | None = 5,
        timeout: float | None = 30.0,
        headers: Sequence[tuple[str, str]] = (),
        refused_statuses: Collection[int] = (503,),
    ) -> None:
        """Configure the target; nothing connects before the first request.

        Args:
            host: the server's address (a name or an IP address).
            port: the server's TCP port.
            path: the request target, or a function of ``(client_id, seq)`` that makes it.
            requests_per_connection: requests per connection before the client reconnects
                (None: keep a connection as long as the server does).
            timeout: seconds a request may take, connecting included (None: no limit).
            headers: extra request headers.
            refused_statuses: statuses that mean the server refused the request (shed it).

        Raises:
            ValueError: a bad ``requests_per_connection`` or ``timeout``.
        """
        import h11  # noqa: F401 - fail early without the bench extra

        super().__init__(
            host, port, requests_per_connection=requests_per_connection, timeout=timeout
        )
        self.path = path
        self.refused_statuses = frozenset(refused_statuses)
        authority = host if ":" not in host else f"[{host}]"
        self._headers = [
            ("Host", authority if port == 80 else f"{authority}:{port}"),
            ("User-Agent", "aseda-bench"),
            *headers,
        ]
        self.bytes_received = 0

    def _wrap(self, stream: SocketStream) -> _HttpConnection:
        return _HttpConnection(stream)

    def _stale_errors(self) -> tuple[type[BaseException], ...]:
        import h11

        return (*_HttpStale, h11.RemoteProtocolError)

    async def _exchange(
        self, conn: _HttpConnection, client_id: int, seq: int, last: bool
    ) -> TargetResult:
        import h11

        path = self.path(client_id, seq) if callable(self.path) else self.path
        headers = [*self._headers, ("Connection", "close")] if last else self._headers
        h = conn.h11
        data = h.send(h11.Request(method="GET", target=path, headers=headers)) or b""
        data += h.send(h11.EndOfMessage()) or b""
        await conn.stream.send(data)
        status = 0
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                try:
                    chunk = await conn.stream.receive()
                except anyio.EndOfStream:
                    chunk = b""
                if chunk:
                    conn.received = True
                h.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                self.bytes_received += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise anyio.EndOfStream
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
        else:  # the server said Connection: close (or spoke HTTP/1.0)
            conn.reusable = False
        if status in self.refused_statuses:
            return Outcome.REFUSED, f"HTTP {status}"
        if status >= 400:
            return Outcome.ERROR, f"HTTP {status}"
        return Outcome.OK


class _TcpConnection(_Connection):
    __slots__ = ("buffered",)

    def __init__(self, stream: SocketStream) -> None:
        super().__init__(stream)
        self.buffered = BufferedByteStream(stream)


class TcpTarget(_PooledTarget[_TcpConnection]):
    """A target that sends a raw request over TCP and reads one delimited reply.

    The request is ``request`` (bytes, or a function of ``(client_id, seq)`` that makes
    them) sent as is; the reply is read up to and including ``delimiter``. ``classify``
    turns the reply into an outcome (by default every reply is served). A connection that
    closes or breaks, a reply longer than ``max_bytes`` or the ``timeout`` is an error.

    Example, a line protocol whose server answers ``BUSY`` when it sheds::

        target = TcpTarget("127.0.0.1", 7000, b"GET key\\n",
                           classify=lambda r: Outcome.REFUSED if r == b"BUSY\\n" else None)

    Attributes:
        connections: connections opened so far.
        answered: requests that got a complete reply so far.
    """

    def __init__(
        self,
        host: str,
        port: int,
        request: bytes | Callable[[int, int], bytes] = b"\n",
        *,
        delimiter: bytes = b"\n",
        classify: Callable[[bytes], TargetResult] | None = None,
        requests_per_connection: int | None = None,
        timeout: float | None = 30.0,
        max_bytes: int = 65536,
    ) -> None:
        """Configure the target; nothing connects before the first request.

        Args:
            host: the server's address.
            port: the server's TCP port.
            request: the bytes of a request, or a function of ``(client_id, seq)``.
            delimiter: the end of a reply.
            classify: maps a reply (delimiter included) to an outcome; None: served.
            requests_per_connection: requests per connection before reconnecting (None:
                keep it while it works).
            timeout: seconds a request may take, connecting included (None: no limit).
            max_bytes: the longest reply accepted.

        Raises:
            ValueError: an empty delimiter, a bad ``requests_per_connection`` or ``timeout``.
        """
        if not delimiter:
            raise ValueError("the delimiter must not be empty")
        super().__init__(
            host, port, requests_per_connection=requests_per_connection, timeout=timeout
        )
        self.request = request
        self.delimiter = delimiter
        self.classify = classify
        self.max_bytes = max_bytes

    def _wrap(self, stream: SocketStream) -> _TcpConnection:
        return _TcpConnection(stream)

    async def _exchange(
        self, conn: _TcpConnection, client_id: int, seq: int, last: bool
    ) -> TargetResult:
        payload = self.request(client_id, seq) if callable(self.request) else self.request
        await conn.buffered.send(payload)
        reply = await conn.buffered.receive_until(self.delimiter, self.max_bytes)
        conn.received = True
        reply += self.delimiter
        return self.classify(reply) if self.classify is not None else Outcome.OK
