"""The thread-offload executor: each worker of a blocking stage owns one thread.

Work crosses to the thread as one job per chunk (a whole batch in one hop), and the result comes
back through the event loop's own thread-safe callback (asyncio's ``call_soon_threadsafe``,
trio's ``run_sync_soon``), which is cheaper than a general-purpose ``to_thread`` call.
A thread lives exactly as long as its worker task, so resizing the pool resizes the threads and
a finished or cancelled run leaves none behind.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["Job", "OffloadThread"]


class Job:
    """One hop to a thread: ``fn(arg, job)`` runs there; ``abort`` asks it to stop early."""

    __slots__ = ("abort", "arg", "done", "error", "fn", "on_done", "result")

    def __init__(
        self,
        fn: Callable[[Any, Job], Any],
        arg: Any,
        done: anyio.Event,
        on_done: Callable[[Job], None] | None = None,
    ) -> None:
        self.fn = fn
        self.arg = arg
        self.done = done
        self.on_done = on_done
        self.abort = False
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        """On the event loop: run ``on_done`` (if any), then wake the waiting worker."""
        if self.on_done is not None and self.error is None:
            try:
                self.on_done(self)
            except Exception as exc:  # pragma: no cover - on_done is aseda's own code
                self.error = exc
        self.done.set()


def _notifier() -> Callable[[Callable[[], object]], object]:
    """Return a thread-safe 'run this soon on the event loop' for the running backend."""
    token = anyio.lowlevel.current_token().native_token
    call = getattr(token, "call_soon_threadsafe", None) or getattr(token, "run_sync_soon", None)
    if call is None:  # pragma: no cover - a backend anyio may add later
        raise RuntimeError(f"aseda cannot wake this event loop from a thread: {token!r}")
    return call  # type: ignore[no-any-return]


class OffloadThread:
    """A thread that runs jobs for one worker task, one at a time."""

    __slots__ = ("_context", "_inbox", "_new_event", "_notify", "_thread")

    def __init__(self, name: str, new_event: type[anyio.Event] = anyio.Event) -> None:
        self._new_event = new_event
        self._notify = _notifier()
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        # Handlers see the context variables of the graph's start (structlog bindings...).
        self._context = contextvars.copy_context()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        inbox, notify, context = self._inbox, self._notify, self._context
        while True:
            job = inbox.get()
            if job is None:
                return
            try:
                job.result = context.run(job.fn, job.arg, job)
            except BaseException as exc:  # delivered to the worker task, never lost
                job.error = exc
            notify(job.finish)

    async def run(
        self,
        fn: Callable[[Any, Job], Any],
        arg: Any,
        on_done: Callable[[Job], None] | None = None,
    ) -> Any:
        """Run ``fn(arg, job)`` on the thread and return its result.

        ``on_done(job)`` runs on the event loop the moment the result is back, before the
        waiting task is even scheduled (used to answer ``call()`` callers without a hop).

        If the caller is cancelled, the job is asked to abort (``job.abort``) and the call still
        waits, shielded, for the thread to return: a thread cannot be interrupted, and returning
        early would leave it running unseen.
        """
        job = Job(fn, arg, self._new_event(), on_done)
        self._inbox.put(job)
        try:
            await job.done.wait()
        except BaseException:
            job.abort = True
            with anyio.CancelScope(shield=True):
                await job.done.wait()
            raise
        if job.error is not None:
            raise job.error
        return job.result

    def stop(self) -> None:
        """End the thread; it is idle (no job outstanding), so this returns at once."""
        self._inbox.put(None)
        self._thread.join()
