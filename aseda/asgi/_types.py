"""ASGI type aliases, and the error of a request that reaches a graph that never started."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

from .._errors import ConfigError

__all__ = ["App", "Message", "NotRunning", "Receive", "Scope", "Send"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
App: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


class NotRunning(ConfigError):
    """A conditioned route was asked for, but the middleware's graph was never started.

    Raised by :class:`aseda.asgi.Conditioned` for a request to a conditioned route (so the
    server answers 500 and logs it), by ``app.running``, and by
    :func:`aseda.asgi.running_graph`, when neither the server's lifespan nor ``async with
    app.run()`` has started the graph: a set-up mistake, such as a server run with its
    lifespan protocol switched off. It is not raised while the graph drains or after it has
    stopped: a request then gets a 503 answer, as a refused one does.
    """
