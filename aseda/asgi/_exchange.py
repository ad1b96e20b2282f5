"""The event a route's stage handles: one request, its client watched while it is queued."""

from __future__ import annotations

import contextvars
from collections import deque
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any

import anyio

from ._types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from ._routes import Route

__all__ = ["FINISHED", "QUEUED", "STARTED", "Exchange", "InContext", "watch"]

QUEUED, STARTED, FINISHED = 0, 1, 2

#: Request body bytes read (and held) while a request is queued; past this the client is no
#: longer watched, and the server's own flow control holds the rest of the body back.
WATCH_LIMIT = 65536


class Exchange:
    """One request to a conditioned route: the event its stage handles.

    An admission policy of the route receives it; it is read-only for the policy.

    Attributes:
        scope: the request's ASGI scope (the same dict the application gets).
        route: the :class:`aseda.asgi.Route` that matched it.
        cls: its class (0 is the highest), or 0 for a route without classes.
    """

    __slots__ = (
        "app_scope",
        "buffer",
        "call_scope",
        "cls",
        "context",
        "error",
        "gone",
        "receive",
        "route",
        "scope",
        "send",
        "state",
        "watch_done",
        "watch_scope",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, route: Route, cls: int) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.route = route
        self.cls = cls
        # The application runs in a copy of the request task's context (not the worker's),
        # so it sees what outer middleware set and leaves nothing behind for the next request.
        self.context = contextvars.copy_context()
        self.state = QUEUED
        self.gone = False  # the client left while the request was queued
        self.buffer: deque[Message] | None = None  # messages the watcher read for the app
        self.error: Exception | None = None  # the application's exception
        self.call_scope: anyio.CancelScope | None = None
        self.app_scope: anyio.CancelScope | None = None
        self.watch_scope: anyio.CancelScope | None = None
        self.watch_done: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<Exchange {self.scope.get('method')} {self.scope.get('path')!r} class {self.cls}>"

    def start(self) -> bool:
        """A worker (or the degraded answer) takes the request; False if the client is gone."""
        if self.gone or self.state != QUEUED:
            return False
        self.state = STARTED
        scope = self.watch_scope
        if scope is not None:
            scope.cancel()
        return True

    def finish(self) -> None:
        """The request task is done with it: stop watching, and stop the app if it runs."""
        state, self.state = self.state, FINISHED
        scope = self.watch_scope
        if scope is not None:
            scope.cancel()
        if state == STARTED and self.app_scope is not None:
            self.app_scope.cancel()  # the request task was cancelled while the app ran

    async def app_receive(self) -> Message:
        """The application's ``receive``: what the watcher read first, then the server's."""
        if self.watch_scope is not None and self.watch_done is not None:
            await self.watch_done.wait()  # the watcher is inside receive(): let it leave first
        buffer = self.buffer
        if buffer:
            return buffer.popleft()
        return await self.receive()


async def watch(ex: Exchange) -> None:
    """While ``ex`` is queued, read what its client sends, to learn if it leaves.

    On ``http.disconnect`` the request's ``call()`` is cancelled, so aseda drops the queued
    event ("caller gone") and the application never runs for it. Every message read is
    kept for the application. The watch ends when a worker takes the request, the request
    ends, or the body read passes :data:`WATCH_LIMIT`.
    """
    if ex.state != QUEUED:
        return
    done = ex.watch_done = anyio.Event()
    buffer = ex.buffer = deque()
    read = 0
    ended = False  # the body is complete: only http.disconnect may follow
    try:
        with anyio.CancelScope() as ex.watch_scope:
            while True:
                message = await ex.receive()
                # No checkpoint between receiving and keeping: a message is never lost.
                buffer.append(message)
                if ex.state != QUEUED:
                    return
                if message.get("type") == "http.disconnect":
                    ex.gone = True
                    if ex.call_scope is not None:
                        ex.call_scope.cancel()
                    return
                read += len(message.get("body", b""))
                if (
                    read > WATCH_LIMIT
                    or message.get("type") != "http.request"
                    or (not message.get("more_body", False) and ended)
                ):
                    return  # too much to hold, or not a message a queued request expects
                ended = not message.get("more_body", False)
    except Exception:
        # The server's receive failed; the application will meet the error itself.
        return
    finally:
        ex.watch_scope = None
        done.set()


class InContext:
    """Await ``awaitable`` with each of its steps run in ``context``.

    The stage's worker task is shared by many requests; stepping the application's coroutine
    inside the request's own context makes the application see the request task's context
    variables, and keeps what it sets from leaking into the next request on that worker.
    Every value and exception the event loop sends is passed through unchanged, so
    cancellation and both asyncio and trio work as if the coroutine were awaited directly.
    """

    __slots__ = ("awaitable", "context")

    def __init__(self, context: contextvars.Context, awaitable: Awaitable[Any]) -> None:
        self.context = context
        self.awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self.awaitable.__await__()
        run = self.context.run
        send, throw = inner.send, inner.throw
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                if error is None:
                    yielded = run(send, value)
                else:
                    thrown, error = error, None
                    try:
                        yielded = run(throw, thrown)
                    finally:
                        del thrown
            except StopIteration as stop:
                return stop.value
            try:
                value = yield yielded
            except GeneratorExit:
                run(inner.close)
                raise
            except BaseException as exc:
                error, value = exc, None
