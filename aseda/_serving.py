"""Listening on TCP and running a small server's accept loops beside a ``with`` block.

Shared by the stats endpoint (``aseda.serve_stats``) and ``aseda.http.serve``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar, cast

import anyio
from anyio.abc import SocketListener, TaskGroup

__all__ = ["listening"]


class _Server(Protocol):
    async def _accept_loop(self, listener: SocketListener, tg: TaskGroup) -> None: ...

    async def _shutdown(self, tg: TaskGroup) -> None: ...


S = TypeVar("S", bound=_Server)


@asynccontextmanager
async def listening(
    host: str, port: int, build: Callable[[list[SocketListener]], S]
) -> AsyncIterator[S]:
    """Listen on ``host:port``, build the server on its listeners, run its accept loops.

    Leaving the block normally calls the server's ``_shutdown(tg)``; leaving it with an
    error cancels the server's tasks, and the error leaves as itself, not wrapped in an
    exception group (the server's own tasks raise nothing). The listeners are closed last.

    Raises:
        OSError: the address cannot be listened on (in use, say).
    """
    multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
    listeners = [cast(SocketListener, listener) for listener in multi.listeners]
    try:
        server = build(listeners)
        body_error: Exception | None = None
        async with anyio.create_task_group() as tg:
            for listener in listeners:
                tg.start_soon(server._accept_loop, listener, tg)
            try:
                yield server
            except Exception as exc:
                body_error = exc
                tg.cancel_scope.cancel()
            except BaseException:
                tg.cancel_scope.cancel()
                raise
            else:
                await server._shutdown(tg)
        if body_error is not None:
            try:
                raise body_error
            finally:
                del body_error
    finally:
        with anyio.CancelScope(shield=True):
            await multi.aclose()
