"""Haboob's stage graph: parse -> cache -> (miss: read on threads -> fill) -> respond.

The socket layer (accept, read and parse HTTP with h11, write, timeouts) is
:func:`aseda.http.serve`: each complete request becomes an :class:`aseda.http.Request` event,
``call()``-ed into this graph, and the :class:`aseda.http.Response` the last stage returns is
written back. The graph, as the SEDA paper's Haboob:

* ``parse`` (the entry; HttpParse's successor): the method (405 for anything but GET and
  HEAD), the request target (:func:`static.parse_target`). Admission control is here: a
  bounded queue and a threshold (or, with ``control="aimd"``, an overload controller's token
  bucket); a refused request is answered 503 with Retry-After by the socket layer.
* ``cache`` (PageCache): looks the page up in the LRU cache; a hit goes straight to
  ``respond``; a miss is routed to ``read``, or, while the same page is already being read,
  to ``join``, which waits for that read instead of reading it again.
* ``read`` (the file I/O stage): a blocking stage, a pool of threads resized by a worker-pool
  controller, that resolves the path safely and reads the file (:func:`static.load`). Its
  own admission policy sheds misses when too many are queued, so cache hits keep flowing
  while the disk is the bottleneck.
* ``fill``: stores the page in the cache (unless larger than the per-item cap: then it is
  served without being cached) and wakes the requests that joined the read.
* ``join``: the requests that found their page being read, parked until it is.
* ``respond`` (HttpSend's producer): builds the response (200, 304 for a conditional GET, or
  the error page).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio

import aseda
from aseda import http
from aseda._log import logger

from .cache import CacheStats, PageCache
from .static import Page, Refused, Target, load, not_modified, parse_target

__all__ = ["Config", "Haboob", "build_graph", "serve_haboob"]

MiB = 2**20
_ALLOWED = "GET, HEAD"


@dataclass(frozen=True)
class Config:
    """Haboob's settings.

    Attributes:
        cache_bytes: the page cache's size in bytes.
        max_item: the largest file cached (default: an eighth of the cache); larger files are
            read from disk on every request, so one cannot evict the whole cache.
        max_file: the largest file served at all (it is read into memory).
        capacity: the ``parse`` stage's queue capacity.
        threshold: ``parse`` refuses requests while this many are queued (None, the default:
            only a full queue refuses). Ignored with ``control="aimd"``. Off by default
            because a 503 costs the socket layer nearly what a page from the cache costs: in
            the benchmark, 1024 closed-loop clients came straight back after each refusal and
            a threshold of 512 lowered throughput by a fifth.
        control: ``"none"``, or ``"aimd"``: an overload controller sets a token bucket's
            rate on ``parse`` from its response time (``target``).
        target: the AIMD controller's response-time target, seconds.
        read_workers: the ``read`` stage's threads: ``(min, initial, max)``, resized by a
            worker-pool controller between min and max.
        read_capacity: the ``read`` stage's queue capacity.
        read_threshold: misses queued at ``read`` beyond which a new miss is refused (503).
        coalesce: concurrent misses for one page read it once.
        join_workers: requests that may wait for another's read at once (more queue).
        join_timeout: seconds a request waits for another's read before reading it itself.
        allow_hidden: serve names starting with a dot (``.well-known``); off by default.
        read_delay: seconds each read sleeps on its thread before reading: a simulated disk
            seek, for demonstrations on a machine whose files all sit in the OS page cache
            (the paper's file set did not fit in memory). 0 in real use.
        lag_target: shed at ``parse`` while the event loop lags more than this many seconds
            (None: off). Under overload the queue that builds is the event loop's own (ready
            connections waiting for their turn), which no stage's queue shows; a timer's lag
            measures it. Refuses a share of requests growing with the excess.
        control_interval: seconds between the controllers' observations.
    """

    cache_bytes: int = 64 * MiB
    max_item: int | None = None
    max_file: int = 256 * MiB
    capacity: int = 1024
    threshold: int | None = None
    control: Literal["none", "aimd"] = "none"
    target: float = 0.05
    read_workers: tuple[int, int, int] = (2, 4, 32)
    read_capacity: int = 512
    read_threshold: int = 256
    coalesce: bool = True
    join_workers: int = 64
    join_timeout: float = 10.0
    allow_hidden: bool = False
    read_delay: float = 0.0
    lag_target: float | None = None
    control_interval: float = 0.25


# -- the events ----------------------------------------------------------------------------


@dataclass(slots=True)
class Lookup:
    """A request for a file, its target checked (``parse`` -> ``cache``)."""

    request: http.Request
    target: Target


class Flight:
    """One read of a page, which other requests for it may join (coalescing)."""

    __slots__ = ("done", "key", "registry", "result")

    def __init__(self, key: str, registry: dict[str, Flight]) -> None:
        self.key = key
        self.registry = registry
        self.done = anyio.Event()
        self.result: Page | Refused | None = None

    def finish(self, result: Page | Refused) -> None:
        """Hand the result to the requests that joined, and take the flight off the board."""
        self.result = result
        self.done.set()
        if self.registry.get(self.key) is self:
            del self.registry[self.key]


@dataclass(slots=True)
class Miss:
    """A lookup that missed the cache (``cache`` -> ``read`` or ``join``)."""

    lookup: Lookup
    flight: Flight | None


@dataclass(slots=True)
class Loaded:
    """A file read, or the reason it was not (``read`` -> ``fill``)."""

    miss: Miss
    result: Page | Refused


@dataclass(slots=True)
class Found:
    """A request and its page or refusal (-> ``respond``)."""

    request: http.Request
    result: Page | Refused


_BUSY = Refused(503, "The server is busy right now. Please try again in a moment.")


class MissAdmission(aseda.AdmissionPolicy):
    """The ``read`` stage's admission: refuse a miss while ``limit`` misses are queued.

    A refused miss that others joined ends its flight as busy, so they are answered at once
    instead of waiting for a read that will not come.
    """

    __slots__ = ("_refusal", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._refusal = aseda.Refusal("disk busy")

    def __call__(self, event: Any, stage: aseda.StageView) -> aseda.Refusal | None:
        if stage.queue_length < self.limit:
            return None
        flight = event.flight if isinstance(event, Miss) else None
        if flight is not None and not flight.done.is_set():
            flight.finish(_BUSY)
        return self._refusal

    def __repr__(self) -> str:
        return f"MissAdmission({self.limit})"


class LoopLag(aseda.AdmissionPolicy):
    """Refuse a share of requests while the event loop lags more than ``target`` seconds.

    :meth:`monitor` (a task) measures how late a periodic timer fires, smoothed; the share
    refused is ``(lag - target) / target``, capped at 1, so shedding grows with the overload.
    """

    __slots__ = ("_count", "_refusal", "lag", "period", "target")

    def __init__(self, target: float, period: float = 0.01) -> None:
        self.target = target
        self.period = period
        self.lag = 0.0
        self._count = 0.0
        self._refusal = aseda.Refusal("event loop lagging")

    def __call__(self, event: Any, stage: aseda.StageView) -> aseda.Refusal | None:
        excess = self.lag - self.target
        if excess <= 0:
            return None
        # Refuse a share of the requests, spread evenly (an error-diffusion counter).
        self._count += min(1.0, excess / self.target)
        if self._count < 1.0:
            return None
        self._count -= 1.0
        return self._refusal

    async def monitor(self) -> None:
        """Measure the loop's lag until cancelled."""
        now = anyio.current_time
        while True:
            start = now()
            await anyio.sleep(self.period)
            late = max(0.0, now() - start - self.period)
            self.lag += 0.25 * (late - self.lag)

    def __repr__(self) -> str:
        return f"LoopLag(target={self.target:g})"


# -- responses -----------------------------------------------------------------------------


def _error(exc: Refused, request: http.Request) -> http.Response:
    """A small error page (JSON for a client that asks for it), or a redirect."""
    headers: list[tuple[str, str]] = []
    if exc.status == 301 and exc.location is not None:
        headers.append(("location", exc.location))
    elif exc.status == 405:
        headers.append(("allow", _ALLOWED))
    elif exc.status == 503:
        headers.append(("retry-after", "1"))
    accept = request.header("accept") or ""
    if "json" in accept and "html" not in accept:
        return http.Response.json(
            {"status": exc.status, "message": exc.reason}, exc.status, headers=headers
        )
    page = f"<!doctype html><title>{exc.status}</title><h1>{exc.status}</h1><p>{exc.reason}</p>"
    return http.Response.html(page, exc.status, headers=headers)


def _page(page: Page, request: http.Request) -> http.Response:
    headers = (("etag", page.etag), ("last-modified", page.last_modified))
    if not_modified(page, request.header("if-none-match"), request.header("if-modified-since")):
        return http.Response(304, headers=headers)
    return http.Response(200, page.body, headers=headers, content_type=page.content_type)


# -- the graph -----------------------------------------------------------------------------


def build_graph(
    root: str | os.PathLike[str],
    cache: PageCache[Page],
    config: Config,
    lag: LoopLag | None = None,
) -> aseda.Graph:
    """Haboob's stage graph over ``root`` and ``cache`` (see the module's docstring).

    Args:
        root: the document root (resolved here; symlinks inside it are followed, those
            leading outside are refused).
        cache: the page cache the stages share.
        config: the settings.
        lag: the loop-lag admission policy for ``parse`` (its monitor must run), which
            replaces the threshold and the AIMD controller.

    Raises:
        NotADirectoryError: ``root`` is not a directory.
    """
    real_root = os.path.realpath(root)
    if not os.path.isdir(real_root):
        raise NotADirectoryError(f"document root {root!s} is not a directory")
    flights: dict[str, Flight] = {}

    if lag is not None:
        admission: aseda.AdmissionPolicy | None = lag
        control: Sequence[aseda.Controller] = ()
    elif config.control == "aimd":
        admission = None
        control = [aseda.AIMD(target=config.target)]
    else:
        admission = aseda.Threshold(config.threshold) if config.threshold else None
        control = ()

    @aseda.stage(capacity=config.capacity, admission=admission, on_refuse="shed", control=control)
    async def parse(request: http.Request) -> Lookup | aseda.To:
        if request.method not in ("GET", "HEAD"):
            return aseda.To("respond", _error(Refused(405, "method not allowed"), request))
        try:
            target = parse_target(request.target, allow_hidden=config.allow_hidden)
        except Refused as exc:
            return aseda.To("respond", _error(exc, request))
        return Lookup(request, target)

    @aseda.stage(name="cache", capacity=config.capacity)
    async def lookup_page(lookup: Lookup) -> Found | aseda.To:
        key = lookup.target.key
        page = cache.get(key)
        if page is not None:
            return Found(lookup.request, page)
        if not config.coalesce:
            return aseda.To("read", Miss(lookup, None))
        flight = flights.get(key)
        if flight is not None:
            return aseda.To("join", Miss(lookup, flight))
        flight = flights[key] = Flight(key, flights)
        return aseda.To("read", Miss(lookup, flight))

    @aseda.stage(
        workers=config.read_workers,
        capacity=config.read_capacity,
        admission=MissAdmission(config.read_threshold),
        on_refuse="shed",
        control=[aseda.WorkerPool()],
    )
    def read(miss: Miss) -> Loaded:
        if config.read_delay:
            time.sleep(config.read_delay)  # a simulated disk seek (Config.read_delay)
        try:
            result: Page | Refused = load(real_root, miss.lookup.target, max_bytes=config.max_file)
        except Refused as exc:
            result = exc
        except Exception as exc:  # a bug or an odd file system: answer 500, keep serving
            logger.error("haboob: reading a file failed", key=miss.lookup.target.key, error=exc)
            result = Refused(500, "Something went wrong on our side.")
        return Loaded(miss, result)

    @aseda.stage(capacity=config.capacity)
    async def fill(loaded: Loaded) -> Found:
        miss, result = loaded.miss, loaded.result
        if isinstance(result, Page):
            cache.put(result.key, result, result.size)
        if miss.flight is not None:
            miss.flight.finish(result)
        return Found(miss.lookup.request, result)

    @aseda.stage(capacity=config.capacity, workers=config.join_workers)
    async def join(miss: Miss) -> Found | aseda.To:
        flight = miss.flight
        assert flight is not None
        with anyio.move_on_after(config.join_timeout):
            await flight.done.wait()
        if flight.result is None:  # the read was dropped (its caller gave up): read it here
            return aseda.To("read", Miss(miss.lookup, None))
        return Found(miss.lookup.request, flight.result)

    @aseda.stage(capacity=config.capacity)
    async def respond(item: Found | http.Response) -> http.Response:
        if isinstance(item, http.Response):
            return item
        if isinstance(item.result, Refused):
            return _error(item.result, item.request)
        return _page(item.result, item.request)

    return aseda.Graph(
        parse >> lookup_page >> respond,
        parse.routes_to(respond),
        lookup_page.routes_to(read, join),
        read >> fill >> respond,
        join >> respond,
        join.routes_to(read),
    )


# -- running it ----------------------------------------------------------------------------


@dataclass
class Haboob:
    """A running Haboob server (what :func:`serve_haboob` yields).

    Attributes:
        url: ``http://HOST:PORT``.
        port: the port it listens on.
        running: the running graph (``running.stats()`` is the per-stage table).
        cache: the page cache (``cache.stats()``).
        server: the socket layer's handle (``server.statistics()``).
        stats_url: the JSON statistics endpoint's address, for ``aseda top`` (or None).
    """

    url: str
    port: int
    running: aseda.RunningGraph
    cache: PageCache[Page]
    server: Any
    config: Config
    stats_url: str | None = None

    def cache_stats(self) -> CacheStats:
        """The page cache's figures now."""
        return self.cache.stats()


@asynccontextmanager
async def serve_haboob(
    root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    config: Config | None = None,
    limits: http.Limits | None = None,
    stats_port: int | None = None,
) -> AsyncIterator[Haboob]:
    """Serve ``root`` with Haboob inside the block; leaving it stops and drains the server.

    Args:
        root: the document root.
        host: the address to listen on.
        port: the port (0: a free one; read it from the result's ``port``).
        config: the graph's settings (:class:`Config`).
        limits: the socket layer's limits (sizes, timeouts, connections).
        stats_port: also serve the graph's statistics for ``aseda top`` on this port (0: a
            free one), on the same host.

    Yields:
        The running server (:class:`Haboob`).
    """
    config = config or Config()
    max_item = config.max_item if config.max_item is not None else config.cache_bytes // 8
    cache: PageCache[Page] = PageCache(config.cache_bytes, min(max_item, config.cache_bytes))
    lag = LoopLag(config.lag_target) if config.lag_target is not None else None
    graph = build_graph(root, cache, config, lag)
    async with AsyncExitStack() as stack:
        running = await stack.enter_async_context(
            graph.run(control_interval=config.control_interval)
        )
        if lag is not None:
            monitors = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(monitors.cancel_scope.cancel)
            monitors.start_soon(lag.monitor)
        server = await stack.enter_async_context(
            http.serve(running, host=host, port=port, limits=limits or http.Limits())
        )
        stats_url = None
        if stats_port is not None:
            endpoint = await stack.enter_async_context(
                aseda.serve_stats(running, host=host, port=stats_port)
            )
            stats_url = endpoint.url
        yield Haboob(server.url, server.port, running, cache, server, config, stats_url)
