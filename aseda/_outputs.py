"""What a handler may return besides a plain value: drop, several outputs, or a route."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, final

__all__ = ["DROP", "DeadLetter", "Failure", "Many", "To"]


@final
class _Drop:
    """Type of :data:`DROP`; there is one instance."""

    __slots__ = ()
    _instance: _Drop | None = None

    def __new__(cls) -> _Drop:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "aseda.DROP"

    def __reduce__(self) -> str:
        return "DROP"


DROP: Final = _Drop()
"""Return this from a handler to emit nothing (a filter). A ``call()`` whose every path was
dropped raises :class:`aseda.Dropped`."""


@final
class Many:
    """Return ``Many(values)`` from a handler to emit several outputs (a flat map).

    Each value is sent on as its own event, in order. A value may itself be a :class:`To`.
    ``Many([])`` emits nothing, like :data:`DROP`.
    """

    __slots__ = ("values",)

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = tuple(values)

    def __repr__(self) -> str:
        return f"aseda.Many({list(self.values)!r})"


@final
class To:
    """Return ``To(stage, value)`` from a handler to send ``value`` to one named stage only.

    The stage must be a successor of the handler's stage or a route declared with
    ``stage.routes_to(...)``; otherwise the event fails with :class:`aseda.RoutingError`.
    """

    __slots__ = ("stage", "value")

    def __init__(self, stage: str, value: Any) -> None:
        self.stage = stage
        self.value = value

    def __repr__(self) -> str:
        return f"aseda.To({self.stage!r}, {self.value!r})"


@final
@dataclass(frozen=True)
class DeadLetter:
    """An ``on_error`` policy: send a :class:`Failure` record to the named stage."""

    stage: str


@final
@dataclass(frozen=True)
class Failure:
    """What a dead-letter stage receives for each failed event.

    Attributes:
        stage: name of the stage whose handler raised.
        event: the event it was handling (a batch handler's failure gives one record for each
            event of the batch).
        error: the exception the handler raised.
    """

    stage: str
    event: Any
    error: BaseException


DIRECTIVES: Final = frozenset({_Drop, Many, To})
