"""Conditioned: an ASGI middleware that runs each matched route's requests through a stage."""

from __future__ import annotations

import copy
import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from .._admission import PerClass, Policy, TokenBucket
from .._controllers import AIMD, USITS
from .._errors import Abandoned, ConfigError, GraphClosed, Rejected
from .._graph import Flow, Graph
from .._instrument import Instrument
from .._log import RateLimit, logger
from .._queue import EventQueue
from .._refusals import Degrade
from .._stage import Stage
from ._exchange import QUEUED, Exchange, InContext, watch
from ._responses import send_refusal, send_stats
from ._routes import Route
from ._types import App, Message, NotRunning, Receive, Scope, Send

if TYPE_CHECKING:
    from .._runtime import RunningGraph

__all__ = ["SCOPE_KEY", "Conditioned", "running_graph"]

#: The scope key holding the RunningGraph, for :func:`running_graph`.
SCOPE_KEY = "aseda"

_EXACT, _PREFIX, _REGEX = 0, 1, 2
_KINDS = {"exact": _EXACT, "prefix": _PREFIX, "regex": _REGEX}

# What a route's handler returns to the request task (the call's final value).
_DONE, _FAILED, _GONE = "done", "failed", "gone"

_class_of_event = operator.attrgetter("cls")

_NOT_STARTED = (
    "the aseda graph of this Conditioned app is not running: serve it with a server that "
    "runs the ASGI lifespan protocol (uvicorn, hypercorn: lifespan on), or wrap the serving "
    "in `async with app.run():`"
)


def running_graph(scope: Scope) -> RunningGraph:
    """The running graph serving this request, for calling its other stages.

    ``await running_graph(request.scope).call(query, to="db")`` in a Starlette or FastAPI
    handler. Every HTTP and websocket request that passes through a running
    :class:`Conditioned` carries it, conditioned or not.

    Raises:
        NotRunning: the request did not pass through a running :class:`Conditioned`.
    """
    try:
        return scope[SCOPE_KEY]  # type: ignore[no-any-return]
    except KeyError:
        raise NotRunning(
            "this request did not pass through a running aseda.asgi.Conditioned app; "
            + _NOT_STARTED
        ) from None


class _Lane:
    """A route as the request path needs it: prepared once, read per request."""

    __slots__ = ("class_count", "header", "name", "queue", "retry_after", "route", "scope_classes")

    def __init__(self, route: Route, retry_after: float) -> None:
        self.route = route
        self.name = route.name
        self.retry_after = retry_after if route.retry_after is None else route.retry_after
        self.class_count = route.class_count
        classes = route.classes
        self.header = classes.encode("latin-1") if isinstance(classes, str) else None
        self.scope_classes = None if isinstance(classes, str) or classes is None else classes
        #: the stage's queue while the graph runs, read to see whether a worker is idle
        self.queue: EventQueue | None = None


class Conditioned:
    """An ASGI app that puts routes of ``app`` behind aseda stages.

    A request whose path (and method) matches a :class:`Route` is handed to that route's
    stage with ``call()``: it waits in the stage's bounded queue for one of its workers,
    which runs ``app`` for it. The first route that matches wins. A refused request never
    reaches ``app``: it is answered 503 with ``Retry-After`` (HTML, or JSON when the client
    prefers it), or by the route's ``degraded`` response. Requests no route matches, and
    websocket connections, go straight to ``app``.

    The graph runs while the server's ASGI lifespan runs (started before ``app``'s own
    startup, drained after its shutdown), or inside ``async with app.run():``.

    Args:
        app: the ASGI application (Starlette, FastAPI...).
        routes: the conditioned routes, first match first.
        stages: more stages (or flows) to run in the same graph, for the application to call
            with :func:`running_graph` (a blocking database stage, say).
        retry_after: seconds, for ``Retry-After`` (a route may give its own).
        stats_path: a path (such as ``"/aseda/stats"``) answering the graph's statistics as
            JSON, as ``aseda.serve_stats`` does at ``/stats`` (so ``aseda top`` reads it);
            None for none.
        control_interval: seconds between the observations fed to the routes' controllers.
        trace: the fraction of requests traced (see ``graph.run(trace=...)``).
        instruments: ``aseda.Instrument`` objects for the run.

    Raises:
        ConfigError: no routes or stages, two routes with one name, a route named like one of
            the stages, a bad ``retry_after`` or ``stats_path``.
        GraphError: the stages do not make a valid graph.
    """

    def __init__(
        self,
        app: App,
        *,
        routes: Sequence[Route] = (),
        stages: Sequence[Stage | Flow] = (),
        retry_after: float = 1.0,
        stats_path: str | None = None,
        control_interval: float = 1.0,
        trace: float = 0.0,
        instruments: Sequence[Instrument] = (),
    ) -> None:
        if not callable(app):
            raise ConfigError(f"Conditioned needs an ASGI app, not {app!r}")
        routes = list(routes)
        for route in routes:
            if not isinstance(route, Route):
                raise ConfigError(f"routes must be aseda.asgi.Route objects, not {route!r}")
        if isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)):
            raise ConfigError(f"retry_after must be a number of seconds, not {retry_after!r}")
        if not 0 <= retry_after < float("inf"):
            raise ConfigError(f"retry_after must be a number of seconds >= 0, not {retry_after!r}")
        if stats_path is not None and (
            not isinstance(stats_path, str) or not stats_path.startswith("/")
        ):
            raise ConfigError(f"stats_path must be a path starting with '/', not {stats_path!r}")
        names: dict[str, Route] = {}
        for route in routes:
            other = names.setdefault(route.name, route)
            if other is not route:
                raise ConfigError(
                    f"two routes are named {route.name!r} ({other.pattern!r} and "
                    f"{route.pattern!r}); give one another name="
                )
        extra: list[Stage | Flow] = list(stages)
        if extra:
            for stage in Graph(*extra).stages:
                if stage.name in names:
                    raise ConfigError(
                        f"route {stage.name!r} has the name of one of the stages; give the "
                        "route another name="
                    )
        if not routes and not extra:
            raise ConfigError("Conditioned needs at least one route (or stage) to condition")
        self.app = app
        self.routes: tuple[Route, ...] = tuple(routes)
        self.retry_after = float(retry_after)
        self.stats_path = stats_path
        self._run_options: dict[str, Any] = {
            "control_interval": control_interval,
            "trace": trace,
            "instruments": tuple(instruments),
        }
        table: list[tuple[int, Any, frozenset[str] | None, _Lane]] = []
        route_stages: list[Stage] = []
        for route in routes:
            lane = _Lane(route, self.retry_after)
            table.append((_KINDS[route.kind], route.match_value, route.methods, lane))
            route_stages.append(self._stage(route))
        self._table = tuple(table)
        self._lanes = tuple(entry[3] for entry in table)
        #: the graph run: one stage per route (in order), then the extra stages
        self.graph = Graph(*route_stages, *extra)
        self._running: RunningGraph | None = None
        self._tg: TaskGroup | None = None
        self._active = False
        self._closed_log = RateLimit(1.0)
        self._class_log = RateLimit(1.0)

    def __repr__(self) -> str:
        return f"<aseda.asgi.Conditioned routes={[r.name for r in self.routes]}>"

    # Building ---------------------------------------------------------------------------------

    def _stage(self, route: Route) -> Stage:
        app = self.app

        async def serve(ex: Exchange) -> str:
            if not ex.start():
                return _GONE  # the client left while the request was queued
            return await _run(ex, app, ex.send)

        control = tuple(
            _with_classes(c, route.order) if route.classes is not None else c for c in route.control
        )
        return route.stage(
            serve,
            admission=_admission(route, control),
            on_refuse=Degrade(_degrade_handler(route)) if route.degraded is not None else None,
            control=control,
        )

    # Running ----------------------------------------------------------------------------------

    @property
    def running(self) -> RunningGraph:
        """The running graph (after a run: the last run's, with its final statistics).

        For ``aseda.serve_stats(app.running)``, ``aseda.register_prometheus`` or reading
        ``app.running.stats()``.

        Raises:
            NotRunning: the graph has never been started.
        """
        if self._running is None:
            raise NotRunning(_NOT_STARTED)
        return self._running

    @asynccontextmanager
    async def run(self) -> AsyncIterator[RunningGraph]:
        """Run the graph inside the block, for servers (and test clients) without lifespan.

        ``async with app.run() as running:`` starts every stage; leaving the block drains
        them (every admitted request is finished first). The lifespan protocol does the
        same by itself.

        Raises:
            ConfigError: the graph is already running (two runs at once).
        """
        if self._active:
            raise ConfigError("this Conditioned app's graph is already running")
        self._active = True
        body_error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                try:
                    async with self.graph.run(**self._run_options) as running:
                        for lane in self._lanes:
                            lane.queue = running.stage_run(lane.name).queue
                        self._running = running
                        yield running
                except Exception as exc:
                    body_error = exc  # leaves as itself below, not in a task group's group
                finally:
                    tg.cancel_scope.cancel()  # watchers of requests still in the server
        finally:
            self._active = False
            self._tg = None
        if body_error is not None:
            raise body_error

    # The ASGI interface -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            running = self._running
            if running is not None:
                scope[SCOPE_KEY] = running
            path = scope["path"]
            root = scope.get("root_path")
            if root:
                path = _route_path(path, root)
            if path == self.stats_path:
                await send_stats(send, scope, running)
                return
            method = scope["method"]
            for match, value, methods, lane in self._table:
                if methods is not None and method not in methods:
                    continue
                if match == _EXACT:
                    if path != value:
                        continue
                elif match == _PREFIX:
                    if not path.startswith(value):
                        continue
                elif value.fullmatch(path) is None:
                    continue
                await self._serve(lane, scope, receive, send)
                return
            await self.app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            if self._running is not None:
                scope[SCOPE_KEY] = self._running
            await self.app(scope, receive, send)

    async def _serve(self, lane: _Lane, scope: Scope, receive: Receive, send: Send) -> None:
        running, tg = self._running, self._tg
        if running is None or tg is None:
            if running is None:
                raise NotRunning(_NOT_STARTED)
            await self._refuse(lane, scope, send, "unavailable", "not running")
            return
        cls = 0 if lane.class_count == 1 else self._class(lane, scope)
        ex = Exchange(scope, receive, send, lane.route, cls)
        outcome: Any = None
        refusal: tuple[str, str] | None = None
        queue = lane.queue
        try:
            if queue is not None and queue.getters:
                # A worker is idle (each queued request has woken one already), so this one
                # is taken at once: there is no wait to watch the client through.
                outcome = await running.call(ex, to=lane.name)
            else:
                with anyio.CancelScope() as ex.call_scope:
                    tg.start_soon(watch, ex)
                    outcome = await running.call(ex, to=lane.name)
        except Rejected as exc:
            refusal = ("overloaded", exc.reason)
        except GraphClosed:
            refusal = ("unavailable", "not running")
        except Abandoned:
            if ex.state != QUEUED:
                raise  # the run was cancelled while the app served the request
            refusal = ("unavailable", "not running")
        finally:
            ex.finish()
        if outcome is _FAILED:
            error = ex.error
            ex.error = None
            assert error is not None
            try:
                raise error  # as the server would have met it without the middleware
            finally:
                del error
        if refusal is not None:
            await self._refuse(lane, scope, send, *refusal)

    async def _refuse(self, lane: _Lane, scope: Scope, send: Send, kind: str, why: str) -> None:
        if kind == "unavailable":
            held = self._closed_log.allow()
            if held is not None:
                logger.warning(
                    "request refused: the graph is not running",
                    route=lane.name,
                    state=None if self._running is None else self._running.state,
                    suppressed=held,
                )
        await send_refusal(
            send, scope, kind=kind, retry_after=lane.retry_after, route=lane.name, reason=why
        )

    def _class(self, lane: _Lane, scope: Scope) -> int:
        """The request's class: 0 (highest) to ``class_count - 1``; the lowest when unknown."""
        lowest = lane.class_count - 1
        header = lane.header
        if header is not None:
            for key, value in scope["headers"]:
                if key == header:
                    try:
                        cls = int(value)
                    except ValueError:
                        return lowest
                    return cls if 0 <= cls <= lowest else lowest
            return lowest
        classify = lane.scope_classes
        if classify is None:
            return 0
        try:
            found = classify(scope)
        except Exception as exc:
            held = self._class_log.allow()
            if held is not None:
                logger.error(
                    "request class failed; lowest class used",
                    route=lane.name,
                    error=repr(exc),
                    suppressed=held,
                    exc_info=exc,
                )
            return lowest
        if type(found) is int and 0 <= found <= lowest:
            return found
        return lowest

    # Lifespan ---------------------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the graph around the application's own lifespan."""
        first = await receive()
        if first.get("type") != "lifespan.startup":  # not the protocol we know: stay out
            await self.app(scope, _replay(first, receive), send)
            return
        answered: dict[str, Message] = {}

        async def app_send(message: Message) -> None:
            kind = message.get("type", "")
            if kind.startswith("lifespan.shutdown."):
                answered["shutdown"] = message  # sent once the graph has drained
                return
            if kind.startswith("lifespan.startup."):
                answered["startup"] = message
            await send(message)

        try:
            async with self.run() as running:
                state = scope.get("state")
                if isinstance(state, dict):
                    state[SCOPE_KEY] = running  # copied into each request's scope["state"]
                try:
                    await self.app(scope, _replay(first, receive), app_send)
                except Exception:
                    if "startup" in answered:
                        raise
                    logger.debug("the application does not speak lifespan; aseda will")
                if "startup" not in answered:
                    # The application does not take part in lifespan: answer for it.
                    await send({"type": "lifespan.startup.complete"})
                    answered["startup"] = {"type": "lifespan.startup.complete"}
                    while (await receive()).get("type") != "lifespan.shutdown":
                        pass
                    answered["shutdown"] = {"type": "lifespan.shutdown.complete"}
                elif answered["startup"].get("type") != "lifespan.startup.complete":
                    return  # startup failed: the server gives up; cancel the run
        except Exception as exc:
            startup = answered.get("startup")
            if startup is None:  # the graph did not start (an init hook failed)
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            if startup.get("type") != "lifespan.startup.complete":
                raise  # the application failed its own startup, and said so
            shutdown = answered.get("shutdown")
            if shutdown is None or shutdown.get("type") == "lifespan.shutdown.complete":
                shutdown = {"type": "lifespan.shutdown.failed", "message": repr(exc)}
            await send(shutdown)
            return
        await send(answered.get("shutdown", {"type": "lifespan.shutdown.complete"}))


def _replay(first: Message, receive: Receive) -> Receive:
    """A ``receive`` that answers ``first`` once, then the server's messages."""
    pending = [first]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


def _route_path(path: str, root: str) -> str:
    """The path without the application's root path (as Starlette's routing reads it)."""
    if not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


async def _run(ex: Exchange, app: App, send: Send) -> str:
    """Run ``app`` for the request, in the request's context; keep its exception for later."""
    try:
        with anyio.CancelScope() as ex.app_scope:
            await InContext(ex.context, app(ex.scope, ex.app_receive, send))
    except Exception as exc:
        # Not the stage's failure: the request task raises it, as the server expects, and
        # the server logs it once.
        ex.error = exc
        return _FAILED
    finally:
        ex.app_scope = None
    return _DONE


def _degrade_handler(route: Route) -> Callable[[Exchange], Awaitable[str]]:
    """The stage's ``Degrade`` handler: the route's degraded response, marked as such."""
    degraded = route.degraded
    assert degraded is not None
    factory = route.degraded_is_factory

    async def degrade(ex: Exchange) -> str:
        if not ex.start():
            return _GONE
        app: Any = degraded
        if factory:
            try:
                app = degraded(ex.scope)  # type: ignore[call-arg]
                if isawaitable(app):
                    app = await app
            except Exception as exc:
                ex.error = exc
                return _FAILED
        return await _run(ex, app, _marked(ex.send))

    return degrade


def _marked(send: Send) -> Send:
    """``send`` adding ``X-Aseda-Degraded: 1`` to the response's headers."""

    async def marked(message: Message) -> None:
        if message.get("type") == "http.response.start":
            message = dict(message)
            message["headers"] = [*message.get("headers", ()), (b"x-aseda-degraded", b"1")]
        await send(message)

    return marked


def _with_classes(controller: Any, order: tuple[int, ...]) -> Any:
    """A rate controller told the route's class order (its default would sort 0 lowest)."""
    if isinstance(controller, (AIMD, USITS)) and controller.classes is None:
        controller = copy.deepcopy(controller)
        controller.classes = order
    return controller


def _admission(route: Route, control: Sequence[Any]) -> Policy | None:
    """The stage's policy: the route's, per class; a token bucket for a rate controller."""
    declared = route._options["admission"]
    rate = next((c for c in control if isinstance(c, (AIMD, USITS))), None)

    def bucket() -> TokenBucket | None:
        if rate is None:
            return None
        start = rate.initial_rate if rate.initial_rate is not None else rate.rate_max
        # Declared rather than left to the runtime: its burst stays put as the rate moves,
        # so a rate cut to drain a spike does not leave a burst of 1 behind.
        return TokenBucket(start, burst=max(4, 2 * route.workers_max))

    if route.classes is None:
        return declared if declared is not None else bucket()
    if isinstance(declared, Mapping):
        policies: dict[Any, Policy | None] = dict(declared)
    else:
        policies = {cls: bucket() for cls in range(route.class_count)}
    return PerClass(policies, _class_of_event, order=route.order)
