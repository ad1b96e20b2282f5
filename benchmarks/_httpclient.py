"""A lean HTTP/1.1 client for the load generator of benchmarks/http.py (benchmarks/http_load.py).

``aseda.bench.HttpTarget`` (h11 over anyio streams, a task per client) costs about 200 us of
CPU per request: at 4,000 to 4,500 requests/s it fills the generator's core, so the benchmark
could not tell servers apart above that rate. This client does the same closed loop with a
small fraction of that work:

* no task and no coroutine per request: each connection is an asyncio :class:`asyncio.Protocol`
  (on uvloop), each client a small state machine driven by its connection's callbacks and by
  one timer per think time; only a connect runs as a task (every 5th request);
* the request bytes are built once per URL path (GET, ``Host``, ``User-Agent``, and
  ``Connection: close`` on a connection's last request);
* :class:`ResponseParser` reads just what framing needs (the status line, ``Content-Length``,
  ``Transfer-Encoding: chunked``, ``Connection``), counts body bytes by the length of what
  arrives without copying it, and raises :class:`BadResponse` on anything it cannot parse.

What it measures is what ``closed_loop`` over ``HttpTarget`` measured: every request is an
``aseda.bench.Sample`` (its time from when the client started it, connecting included, to the
last byte of the answer), and :func:`closed_loop` returns the same ``aseda.bench.Report``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aseda.bench import Outcome, Report, Sample, Samples

__all__ = [
    "BadResponse",
    "ClosedLoop",
    "Connection",
    "Held",
    "Requests",
    "ResponseParser",
    "closed_loop",
]

clock = time.perf_counter

#: the longest response head accepted (status line and headers)
MAX_HEAD = 65536
#: the longest chunk-size or trailer line accepted
MAX_LINE = 4096

_HEAD, _LENGTH, _UNTIL_CLOSE, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _DONE = range(8)
_HEX = frozenset(b"0123456789abcdefABCDEF")


class BadResponse(Exception):
    """The server's answer is not an HTTP/1.x response this client can read.

    Raised by :meth:`ResponseParser.feed`; the load generator counts it as an error (detail
    ``"BadResponse"``) and drops the connection. Not raised for an answer cut short by the
    server closing the connection: :meth:`ResponseParser.feed_eof` returns False then.
    """


class ResponseParser:
    """Reads one HTTP/1.x response at a time, fed the bytes as they arrive.

    Framing follows RFC 9112 section 6.3 for the answer to a GET: no body for 1xx, 204 and 304;
    ``Transfer-Encoding: chunked``; else ``Content-Length``; else the body runs until the
    server closes the connection. Interim 1xx responses (but 101) are skipped. Both a
    ``Transfer-Encoding`` and a ``Content-Length``, conflicting lengths, another transfer
    coding, a malformed line, a head over ``MAX_HEAD`` bytes and bytes after the end of the
    response all raise :class:`BadResponse`.

    Attributes:
        status: the status code (0 until the head is read).
        keep_alive: whether the connection can carry another request after this response
            (HTTP/1.1 without ``Connection: close``, and a body not delimited by the close).
        body_bytes: body bytes received so far (chunked: the chunks' data only).
        received: bytes of any kind received since :meth:`reset`.
    """

    __slots__ = ("_buf", "_remaining", "_state", "body_bytes", "keep_alive", "received", "status")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Get ready for the next response."""
        self._state = _HEAD
        self._buf = b""
        self._remaining = 0
        self.status = 0
        self.keep_alive = True
        self.body_bytes = 0
        self.received = 0

    @property
    def complete(self) -> bool:
        """Whether the whole response has been read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> bool:
        """Take the next bytes of the answer; return True once the response is complete.

        Raises:
            BadResponse: the bytes do not continue a response this parser can read.
        """
        self.received += len(data)
        state = self._state
        if state == _LENGTH:  # the hot path: a body of known length, counted, never copied
            left = self._remaining - len(data)
            if left > 0:
                self._remaining = left
                self.body_bytes += len(data)
                return False
            if left < 0:
                raise BadResponse("more bytes than the Content-Length")
            self.body_bytes += len(data)
            self._state = _DONE
            return True
        if state == _HEAD:
            return self._feed_head(data)
        if state == _UNTIL_CLOSE:
            self.body_bytes += len(data)
            return False
        if state == _DONE:
            if data:
                raise BadResponse("bytes after the end of the response")
            return True
        return self._feed_chunked(data)

    def feed_eof(self) -> bool:
        """The server closed the connection: return True if that completes the response
        (a body delimited by the close), False if the response was cut short."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
        return self._state == _DONE

    def _feed_head(self, data: bytes) -> bool:
        head = self._buf + data if self._buf else data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if not head.startswith(b"HTTP/1."[: len(head)]):
                raise BadResponse("not an HTTP/1.x response")
            if len(head) > MAX_HEAD:
                raise BadResponse(f"a response head over {MAX_HEAD} bytes")
            self._buf = head
            return False
        self._buf = b""
        start = end + 4
        self._parse_head(head[:end])
        state = self._state
        if state == _LENGTH:
            extra = len(head) - start
            if extra < self._remaining:
                self._remaining -= extra
                self.body_bytes += extra
                return False
            if extra > self._remaining:
                raise BadResponse("more bytes than the Content-Length")
            self.body_bytes += extra
            self._state = _DONE
            return True
        if state == _DONE:
            if start < len(head):
                raise BadResponse("bytes after the end of the response")
            return True
        if state == _HEAD:  # an interim 1xx response: the real one follows
            return self._feed_head(head[start:]) if start < len(head) else False
        if state == _UNTIL_CLOSE:
            self.body_bytes += len(head) - start
            return False
        return self._feed_chunked(head[start:])

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        if version == b"HTTP/1.1":
            keep_alive = True
        elif version == b"HTTP/1.0":
            keep_alive = False  # as h11 does: no keep-alive with an HTTP/1.0 server
        else:
            raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        code = rest[:3]
        if len(code) != 3 or not code.isdigit() or rest[3:4] not in (b"", b" "):
            raise BadResponse(f"a bad status line: {lines[0][:80]!r}")
        status = int(code)
        length = -1
        chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
                raise BadResponse(f"a bad header line: {line[:80]!r}")
            name = name.lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit() or (length >= 0 and int(value) != length):
                    raise BadResponse(f"a bad Content-Length: {value[:40]!r}")
                length = int(value)
            elif name == b"transfer-encoding":
                if value.strip().lower() != b"chunked":
                    raise BadResponse(f"an unsupported Transfer-Encoding: {value[:40]!r}")
                chunked = True
            elif name == b"connection" and b"close" in (
                t.strip() for t in value.lower().split(b",")
            ):
                keep_alive = False
        if chunked and length >= 0:
            raise BadResponse("both Transfer-Encoding and Content-Length")
        self.status = status
        self.keep_alive = keep_alive
        if 100 <= status < 200:
            if status == 101:
                raise BadResponse("101 Switching Protocols to a GET")
            self._state = _HEAD  # skip it; the response follows
        elif status in (204, 304):
            self._state = _DONE
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length >= 0:
            self._remaining = length
            self._state = _LENGTH if length else _DONE
        else:
            self.keep_alive = False
            self._state = _UNTIL_CLOSE

    def _feed_chunked(self, data: bytes) -> bool:
        buf = self._buf + data if self._buf else data
        pos, size = 0, len(buf)
        while pos < size or self._state == _DONE:
            state = self._state
            if state == _CHUNK_DATA:
                take = min(self._remaining, size - pos)
                self.body_bytes += take
                self._remaining -= take
                pos += take
                if self._remaining == 0:
                    self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if size - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise BadResponse("a chunk not followed by CRLF")
                pos += 2
                self._state = _CHUNK_SIZE
            elif state in (_CHUNK_SIZE, _TRAILER):
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if size - pos > MAX_LINE:
                        raise BadResponse("a chunk-size or trailer line too long")
                    break
                line = buf[pos:eol]
                pos = eol + 2
                if state == _TRAILER:
                    if not line:
                        self._state = _DONE
                    elif b":" not in line:
                        raise BadResponse(f"a bad trailer line: {line[:80]!r}")
                    continue
                digits = line.partition(b";")[0].strip()
                if not digits or not _HEX.issuperset(digits):
                    raise BadResponse(f"a bad chunk size: {line[:40]!r}")
                self._remaining = int(digits, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILER
            else:  # _DONE
                if pos < size:
                    raise BadResponse("bytes after the end of the response")
                self._buf = b""
                return True
        self._buf = buf[pos:]
        return False


class _Owner:
    """What a connection reports to: a closed-loop client, or a held connection's waiter."""

    __slots__ = ()

    def answered(self, conn: Connection) -> None:
        raise NotImplementedError

    def failed(self, conn: Connection | None, detail: str) -> None:
        raise NotImplementedError


class Connection(asyncio.Protocol):
    """One client connection: sends a request, parses the answer, tells its owner.

    Attributes:
        parser: the current response's parser (status, body bytes, keep-alive).
        uses: responses completed on this connection.
        closed: the connection is closed, or the server has closed its side.
        busy: a request was sent and its answer is not complete yet.
    """

    def __init__(self, owner: _Owner, opened: set[Connection] | None = None) -> None:
        self.owner = owner
        self.parser = ResponseParser()
        self.transport: Any = None  # uvloop's transport is not an asyncio.Transport
        self.uses = 0
        self.closed = False
        self.busy = False
        self._opened = opened

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self._opened is not None:
            self._opened.add(self)

    def send(self, request: bytes) -> None:
        """Send a request; the owner hears of the answer (or the failure)."""
        self.parser.reset()
        self.busy = True
        self.transport.write(request)

    def close(self) -> None:
        """Close the connection (no owner callback)."""
        self.closed = True
        self.busy = False
        self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (no owner callback)."""
        self.closed = True
        self.busy = False
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # nothing asked for: the server is confused; drop it
            self.abort()
            return
        try:
            done = self.parser.feed(data)
        except BadResponse:
            self._fail("BadResponse")
            return
        if done:
            self.busy = False
            self.uses += 1
            self.owner.answered(self)

    def eof_received(self) -> bool:
        self.closed = True
        if self.busy:
            if self.parser.feed_eof():
                self.busy = False
                self.uses += 1
                self.owner.answered(self)
            else:
                self._fail("EndOfStream")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._opened is not None:
            self._opened.discard(self)
        if self.busy:
            self.busy = False
            self.owner.failed(self, type(exc).__name__ if exc is not None else "EndOfStream")

    def _fail(self, detail: str) -> None:
        self.abort()
        self.owner.failed(self, detail)


class Requests:
    """The bytes of the GET of each URL path, built once: keep-alive, and the last one on a
    connection (``Connection: close``). The headers are those ``HttpTarget`` sent."""

    def __init__(self, host: str, port: int) -> None:
        authority = host if ":" not in host else f"[{host}]"
        authority = authority if port == 80 else f"{authority}:{port}"
        self._head = f"HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: aseda-bench\r\n".encode()
        self._cache: dict[str, tuple[bytes, bytes]] = {}

    def __call__(self, path: str, last: bool) -> bytes:
        pair = self._cache.get(path)
        if pair is None:
            start = b"GET " + path.encode("ascii") + b" " + self._head
            pair = self._cache[path] = (start + b"\r\n", start + b"Connection: close\r\n\r\n")
        return pair[last]


# The closed loop -----------------------------------------------------------------------------


class _Client(_Owner):
    """One closed-loop client: request, answer, think, next; a new connection every K."""

    __slots__ = ("conn", "id", "path", "retried", "run", "sample", "seq")

    def __init__(self, run: ClosedLoop, client_id: int) -> None:
        self.run = run
        self.id = client_id
        self.seq = 0
        self.conn: Connection | None = None
        self.sample: Sample | None = None
        self.path = ""
        self.retried = False

    def start(self) -> None:
        """Send the next request (or retire at the end of the run)."""
        run = self.run
        now = clock() - run.origin
        if now >= run.duration or run.stopped:
            run.retire()
            return
        self.path = path = run.paths(self.id, self.seq)
        self.sample = sample = Sample(self.id, self.seq, now, now)
        run.items.append(sample)
        self.retried = False
        conn = self.conn
        if conn is None or conn.closed:
            self.conn = None
            run.connect(self, run.requests(path, run.per_connection == 1))
        else:
            conn.send(run.requests(path, conn.uses + 1 >= run.per_connection))

    def connected(self, conn: Connection, request: bytes) -> None:
        self.conn = conn
        conn.send(request)

    def answered(self, conn: Connection) -> None:
        run = self.run
        if run.stopped:
            return
        sample = self.sample
        assert sample is not None
        sample.finished = clock() - run.origin
        parser = conn.parser
        status = parser.status
        if status in run.refused_statuses:
            sample.outcome, sample.detail = Outcome.REFUSED, f"HTTP {status}"
        elif status >= 400:
            sample.outcome, sample.detail = Outcome.ERROR, f"HTTP {status}"
        else:
            sample.outcome = Outcome.OK
        run.answered += 1
        run.bytes_received += parser.body_bytes
        if not parser.keep_alive or conn.uses >= run.per_connection:
            conn.close()
            self.conn = None
        self._next()

    def failed(self, conn: Connection | None, detail: str) -> None:
        run = self.run
        if run.stopped:
            return
        self.conn = None
        if conn is not None and conn.uses and not conn.parser.received and not self.retried:
            # The server had closed the kept-alive connection: once more on a fresh one.
            self.retried = True
            run.connect(self, run.requests(self.path, run.per_connection == 1))
            return
        sample = self.sample
        assert sample is not None
        sample.finished = clock() - run.origin
        sample.outcome, sample.detail = Outcome.ERROR, detail
        self._next()

    def _next(self) -> None:
        self.seq += 1
        run = self.run
        if run.think > 0:
            run.loop.call_later(run.think, self.start)
        else:
            run.loop.call_soon(self.start)


class ClosedLoop:
    """``clients`` closed-loop clients against one server; see :func:`closed_loop`.

    Attributes (the figures ``HttpTarget`` kept):
        connections: connections opened.
        answered: requests that got a complete answer (any status).
        bytes_received: body bytes received.
        requests_per_connection: requests per connection before reconnecting.
    """

    def __init__(
        self,
        host: str,
        port: int,
        paths: Callable[[int, int], str],
        clients: int,
        duration: float,
        *,
        think: float,
        per_connection: int,
        refused_statuses: frozenset[int] = frozenset({503}),
    ) -> None:
        if clients < 1 or per_connection < 1 or not duration > 0 or think < 0:
            raise ValueError("needs clients >= 1, per_connection >= 1, duration > 0, think >= 0")
        self.host = host
        self.port = port
        self.paths = paths
        self.clients = clients
        self.duration = duration
        self.think = think
        self.per_connection = self.requests_per_connection = per_connection
        self.refused_statuses = refused_statuses
        self.requests = Requests(host, port)
        self.items: list[Sample] = []
        self.connections = 0
        self.answered = 0
        self.bytes_received = 0
        self.origin = 0.0
        self.stopped = False
        self.loop = asyncio.get_running_loop()
        self._active = clients
        self._all_done = asyncio.Event()
        self._open: set[Connection] = set()
        self._connecting: set[asyncio.Task[None]] = set()

    def connect(self, client: _Client, request: bytes) -> None:
        task = self.loop.create_task(self._connect(client, request))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, client: _Client, request: bytes) -> None:
        try:
            _, conn = await self.loop.create_connection(
                lambda: Connection(client, self._open), self.host, self.port
            )
        except OSError as exc:
            client.failed(None, type(exc).__name__)
            return
        self.connections += 1
        if self.stopped:
            conn.abort()
            return
        client.connected(conn, request)

    def retire(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._all_done.set()

    async def run(self, grace: float) -> float:
        """Run the clients for ``duration`` s, give requests in flight ``grace`` s, then
        drop every connection; return when that happened (seconds from the origin)."""
        self.origin = clock()
        for c in range(self.clients):
            self.loop.call_soon(_Client(self, c).start)
        await asyncio.sleep(max(0.0, self.origin + self.duration - clock()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_done.wait(), grace)
        cancelled_at = clock() - self.origin
        self.stopped = True  # what is still in flight stays unfinished
        for task in list(self._connecting):
            task.cancel()
        for conn in list(self._open):
            conn.abort()
        await asyncio.sleep(0)  # let the transports report their closing
        return cancelled_at

    def report(
        self, *, warmup: float, grace: float, seed: int | None = None, name: str = ""
    ) -> Report:
        """The run's ``aseda.bench.Report``, as ``aseda.bench.closed_loop`` makes it."""
        self.items.sort(key=lambda s: s.intended)
        samples = Samples("closed", self.clients, self.duration, self.items, self.origin)
        params = {
            "clients": self.clients,
            "duration": self.duration,
            "requests_per_client": None,
            "think_time": self.think,
            "think": "fixed",
            "ramp": 0.0,
            "seed": seed,
            "warmup": warmup,
            "grace": grace,
        }
        return samples.report(name=name, warmup=warmup, params=params)


async def closed_loop(
    host: str,
    port: int,
    paths: Callable[[int, int], str],
    clients: int,
    duration: float,
    *,
    think: float = 0.020,
    per_connection: int = 5,
    warmup: float = 0.0,
    grace: float = 2.0,
    seed: int | None = None,
    name: str = "closed loop",
) -> tuple[Report, ClosedLoop, float]:
    """``aseda.bench.closed_loop`` over ``HttpTarget``, measured the same way, at less cost.

    Each client sends a GET for ``paths(client, seq)``, waits for the whole answer, thinks
    ``think`` s and sends the next, until ``duration`` s have passed; it closes its connection
    after ``per_connection`` requests (the last asks ``Connection: close``) or when the server
    closes it, and opens a new one for its next request. A reused connection that the server
    closed before any byte of the answer came back is retried once on a new one. No request
    timeout. 503 is refused; other statuses of 400 or more, broken or refused connections
    and unreadable answers are errors. Requests in flight at ``duration`` get ``grace`` s.

    Returns:
        The report (its samples hold every request), the run (its counters), and when the
        requests still in flight were cancelled (seconds from the origin).
    """
    run = ClosedLoop(
        host, port, paths, clients, duration, think=think, per_connection=per_connection
    )
    cancelled_at = await run.run(grace)
    return run.report(warmup=warmup, grace=grace, seed=seed, name=name), run, cancelled_at


# Held connections ----------------------------------------------------------------------------


class _Failed(Exception):
    def __init__(self, detail: str, retry: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry = retry


class _Waiter(_Owner):
    """Turns a held connection's callbacks into an awaitable answer."""

    def __init__(self) -> None:
        self.future: asyncio.Future[int] | None = None

    def answered(self, conn: Connection) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(conn.parser.status)

    def failed(self, conn: Connection | None, detail: str) -> None:
        if self.future is not None and not self.future.done():
            stale = conn is not None and conn.uses > 0 and not conn.parser.received
            self.future.set_exception(_Failed(detail, stale))


class Held:
    """Connections held open, one per slot, each making a request when asked (``--hold``).

    Attributes:
        connections: connections opened so far.
    """

    def __init__(self, host: str, port: int, path: str, n: int, *, timeout: float = 60.0):
        self.host = host
        self.port = port
        self.request = Requests(host, port)(path, False)
        self.timeout = timeout
        self.connections = 0
        self._conns: list[Connection | None] = [None] * n

    async def _connect(self) -> Connection:
        waiter = _Waiter()
        _, conn = await asyncio.get_running_loop().create_connection(
            lambda: Connection(waiter), self.host, self.port
        )
        self.connections += 1
        return conn

    async def _fetch(self, conn: Connection) -> int:
        waiter = conn.owner
        assert isinstance(waiter, _Waiter)
        waiter.future = asyncio.get_running_loop().create_future()
        conn.send(self.request)
        return await waiter.future

    async def _request(self, i: int) -> str:
        conn = self._conns[i]
        fresh = conn is None or conn.closed
        if conn is None or conn.closed:
            conn = self._conns[i] = await self._connect()
        try:
            status = await self._fetch(conn)
        except _Failed as exc:
            if fresh or not exc.retry:
                raise
            # The server had closed the kept-alive connection: once more on a fresh one.
            conn = self._conns[i] = await self._connect()
            status = await self._fetch(conn)
        if not conn.parser.keep_alive:
            conn.close()
        return "ok" if status < 400 else f"HTTP {status}"

    async def round(self, concurrency: int) -> Counter[str]:
        """One request on every slot (at most ``concurrency`` at a time); outcomes."""
        outcomes: Counter[str] = Counter()
        limiter = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with limiter:
                try:
                    outcome = await asyncio.wait_for(self._request(i), self.timeout)
                except _Failed as exc:
                    outcome = exc.detail
                except (OSError, TimeoutError) as exc:
                    outcome = type(exc).__name__
                    conn = self._conns[i]
                    if conn is not None and not conn.closed:
                        conn.abort()
                outcomes[outcome] += 1

        await asyncio.gather(*(one(i) for i in range(len(self._conns))))
        return outcomes

    def close(self) -> None:
        """Close every connection."""
        for conn in self._conns:
            if conn is not None and not conn.closed:
                conn.close()
