"""What a refused event becomes: wait, shed, degrade or redirect; and the service order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, final

from ._errors import ConfigError

__all__ = ["AdaptiveLIFO", "Degrade", "OnRefuse", "Redirect", "check_on_refuse"]


@final
@dataclass(frozen=True)
class Degrade:
    """On refusal, answer with a cheaper handler instead (a static "busy" page, a cached value).

    ``handler(event)`` (sync or async) runs at once in the sender's context, so keep it cheap;
    its return value travels on as if the stage's own handler had returned it, and a ``call()``
    gets it as its answer. Counted in the stage's ``degraded``.
    """

    handler: Callable[[Any], Any | Awaitable[Any]]

    def __post_init__(self) -> None:
        if not callable(self.handler):
            raise ConfigError(f"Degrade needs a callable, not {self.handler!r}")


@final
@dataclass(frozen=True)
class Redirect:
    """On refusal, send the event to another named stage (with that stage's own admission).

    Counted in the refusing stage's ``redirected``.
    """

    stage: str

    def __post_init__(self) -> None:
        if not isinstance(self.stage, str) or not self.stage:
            raise ConfigError(f"Redirect needs a stage name, not {self.stage!r}")


OnRefuse: TypeAlias = "Literal['wait', 'shed'] | Degrade | Redirect"


def check_on_refuse(value: object, where: str) -> None:
    """Raise ConfigError unless ``value`` is a valid ``on_refuse``."""
    if not (value in ("wait", "shed") or isinstance(value, (Degrade, Redirect))):
        raise ConfigError(
            f"{where}: on_refuse must be 'wait', 'shed', aseda.Degrade(handler) or "
            f"aseda.Redirect(stage), not {value!r}"
        )


@final
@dataclass(frozen=True)
class AdaptiveLIFO:
    """Serve the newest event first while a queue stands; first in, first out otherwise.

    Under overload the oldest events are the ones most likely to be useless by the time they
    are served (their client gave up), so serving the newest keeps most answers timely; with a
    short queue the order is fair. The queue "stands" while it holds ``threshold`` events or
    more (as in CoDel-based RPC servers, which switch to LIFO once a queue forms).
    """

    threshold: int = 32

    def __post_init__(self) -> None:
        if (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int)
            or self.threshold < 1
        ):
            raise ConfigError(f"AdaptiveLIFO threshold must be an int >= 1, not {self.threshold!r}")
