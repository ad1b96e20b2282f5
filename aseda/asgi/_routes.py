"""Route: which requests a stage conditions, with the stage's options and its request classes."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from .._admission import PerClass, Policy, QueueDeadline
from .._errors import ConfigError
from .._refusals import AdaptiveLIFO, Degrade, Redirect
from .._stage import Stage, Workers
from .._stage import stage as make_stage
from ._types import App, Scope

__all__ = ["Classes", "Route", "compile_pattern"]

#: A request's class: a header whose value is the class, or a function of the scope.
Classes = str | Callable[[Scope], int]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP token (a method, a header)

#: A compiled pattern: ("exact", path), ("prefix", start) or ("regex", pattern).
Matcher = tuple[str, "str | re.Pattern[str]"]


def compile_pattern(pattern: str) -> Matcher:
    """Check a route pattern and return how to match it: ``(kind, value)``.

    ``kind`` is ``"exact"`` (``value`` is the path), ``"prefix"`` (a trailing ``*``:
    ``value`` is what a path must start with) or ``"regex"`` (``{param}`` segments: ``value``
    is a pattern for ``fullmatch``).

    Raises:
        ConfigError: the pattern does not start with ``/``, has a ``*`` before its end, a
            brace that is not a whole ``{name}`` segment, or one name twice.
    """
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ConfigError(f"a route pattern must be a string starting with '/', not {pattern!r}")
    prefix = pattern.endswith("*")
    body = pattern[:-1] if prefix else pattern
    if "*" in body:
        raise ConfigError(
            f"route pattern {pattern!r}: '*' may only end a pattern (a prefix: '/static/*')"
        )
    names: list[str] = []
    parts: list[str] = []
    for segment in body.split("/"):
        if "{" not in segment and "}" not in segment:
            parts.append(re.escape(segment))
            continue
        found = _PARAM.fullmatch(segment)
        if found is None:
            raise ConfigError(
                f"route pattern {pattern!r}: a parameter must be a whole segment "
                f"'{{name}}' with a Python identifier as name, not {segment!r}"
            )
        if found.group(1) in names:
            raise ConfigError(f"route pattern {pattern!r} names {found.group(1)!r} twice")
        names.append(found.group(1))
        parts.append("[^/]+")
    if not names:
        return ("prefix", body) if prefix else ("exact", body)
    return "regex", re.compile("/".join(parts) + (".*" if prefix else ""), re.DOTALL)


def _methods(methods: Iterable[str] | None, pattern: str) -> frozenset[str] | None:
    if methods is None:
        return None
    if isinstance(methods, str):
        methods = [methods]
    out: set[str] = set()
    for method in methods:
        if not isinstance(method, str) or not _TOKEN.match(method):
            raise ConfigError(f"route {pattern!r}: {method!r} is not an HTTP method")
        out.add(method.upper())
    if not out:
        raise ConfigError(f"route {pattern!r}: methods must name at least one method, or be None")
    if "GET" in out:
        out.add("HEAD")  # as the frameworks do: a GET route answers HEAD too
    return frozenset(out)


def _degraded_app(degraded: Any, pattern: str) -> tuple[App, bool] | None:
    """``(callable, is_factory)``: an ASGI app, or a function ``(scope) -> ASGI app``."""
    if degraded is None:
        return None
    if not callable(degraded):
        raise ConfigError(
            f"route {pattern!r}: degraded must be an ASGI app or a callable (scope) -> "
            f"response, not {degraded!r}"
        )
    try:
        params = inspect.signature(degraded).parameters.values()
    except (TypeError, ValueError):
        return degraded, False  # a builtin or C callable: take it for an ASGI app
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    if len(positional) == 3 or (variadic and len(positional) < 3):
        return degraded, False
    if len(positional) == 1:
        return degraded, True
    raise ConfigError(
        f"route {pattern!r}: degraded must be an ASGI app (scope, receive, send) or a "
        f"callable (scope) -> response; {degraded!r} takes {len(positional)} arguments"
    )


class Route:
    """A route of the application put behind its own aseda stage.

    The stage's worker runs the application for each request the route matches, so the
    stage's ``workers`` are the route's concurrency limit, its queue holds the requests
    waiting for one, and its latency figures are those of the requests (queue wait plus the
    application's time). A refused request never reaches the application: it is answered
    503 with ``Retry-After``, or by ``degraded`` when the route declares it.

    Args:
        pattern: the paths the route matches: exact (``"/search"``), with whole-segment
            parameters (``"/messages/{id}"`` matches ``/messages/12`` but not
            ``/messages/12/x``), or a prefix ending in ``*`` (``"/static/*"`` matches every
            path under ``/static/``).
        name: the stage's name (in statistics, Prometheus, ``aseda top``); the pattern by
            default.
        methods: the HTTP methods matched (``GET`` implies ``HEAD``); None for all.
        workers: ``n``, ``(min, max)`` or ``(min, initial, max)``: how many requests of the
            route the application serves at once (8).
        capacity: how many requests may wait for a worker (64).
        admission: an aseda admission policy (``aseda.Threshold``, ``TokenBucket``,
            ``Credits``...) or, with ``classes``, a mapping from each class to its own
            policy (or None).
        on_refuse: what a refused request becomes: ``"shed"`` (503, the default),
            ``"wait"`` (the request waits for room: backpressure, with no limit but the
            server's), or ``aseda.Redirect(name)`` (another route's stage).
        control: a controller (``aseda.AIMD(target=1.0)``, ``aseda.USITS(...)``,
            ``aseda.WorkerPool()``...) or a sequence of them.
        classes: the request's class: the name of a header whose value is the class (an
            int; 0 is the highest), or a function ``(scope) -> int``. A missing header, or a
            value that is not an int in ``[0, class_count)``, is the lowest class.
        class_count: how many classes there are (2).
        degraded: what a refused request gets instead of the 503: an ASGI app (a Starlette
            ``Response`` is one) or a function ``(scope) -> ASGI app``; served at once,
            with the header ``X-Aseda-Degraded: 1``.
        retry_after: the ``Retry-After`` of this route's 503s, seconds (default: the
            middleware's).
        deadline: an ``aseda.QueueDeadline`` (CoDel): shed requests that waited too long.
        order: ``"fifo"``, ``"adaptive_lifo"`` or ``aseda.AdaptiveLIFO(threshold)``.

    Raises:
        ConfigError: a bad pattern, method, class option, ``degraded`` or stage option.
    """

    __slots__ = (
        "_options",
        "class_count",
        "classes",
        "control",
        "degraded",
        "degraded_is_factory",
        "kind",
        "match_value",
        "methods",
        "name",
        "pattern",
        "retry_after",
        "workers_max",
    )

    def __init__(
        self,
        pattern: str,
        *,
        name: str | None = None,
        methods: Iterable[str] | None = None,
        workers: Workers = 8,
        capacity: float = 64,
        admission: Policy | Mapping[int, Policy | None] | None = None,
        on_refuse: Literal["shed", "wait"] | Redirect | None = None,
        control: Any = (),
        classes: Classes | None = None,
        class_count: int = 2,
        degraded: Any = None,
        retry_after: float | None = None,
        deadline: QueueDeadline | None = None,
        order: Literal["fifo", "adaptive_lifo"] | AdaptiveLIFO = "fifo",
    ) -> None:
        self.kind, self.match_value = compile_pattern(pattern)
        self.pattern = pattern
        self.name = pattern if name is None else name
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"route {pattern!r}: name must be a non-empty string, not {name!r}")
        self.methods = _methods(methods, pattern)
        where = f"route {self.name!r}"
        if classes is not None and not (
            (isinstance(classes, str) and _TOKEN.match(classes)) or callable(classes)
        ):
            raise ConfigError(
                f"{where}: classes must be a header name or a callable (scope) -> int, "
                f"not {classes!r}"
            )
        if isinstance(class_count, bool) or not isinstance(class_count, int) or class_count < 1:
            raise ConfigError(f"{where}: class_count must be an int >= 1, not {class_count!r}")
        self.classes = classes.lower() if isinstance(classes, str) else classes
        self.class_count = class_count
        if isinstance(admission, PerClass):
            raise ConfigError(
                f"{where}: give admission={{class: policy}} with classes=, not a PerClass: "
                "the route builds the PerClass from the request's class"
            )
        if isinstance(admission, Mapping):
            if classes is None:
                raise ConfigError(f"{where}: admission as a mapping needs classes=")
            if set(admission) != set(range(class_count)):
                raise ConfigError(
                    f"{where}: admission must map each class 0..{class_count - 1} to a policy "
                    f"(or None), not {sorted(admission, key=repr)!r}"
                )
        elif admission is not None and classes is not None:
            raise ConfigError(
                f"{where}: with classes=, give admission as a mapping {{class: policy or "
                f"None}} (0..{class_count - 1})"
            )
        found = _degraded_app(degraded, pattern)
        self.degraded: App | None = None if found is None else found[0]
        self.degraded_is_factory = found is not None and found[1]
        if on_refuse is not None:
            if isinstance(on_refuse, Degrade):
                raise ConfigError(f"{where}: declare a degraded response with degraded=")
            if degraded is not None:
                raise ConfigError(
                    f"{where}: degraded= answers refused requests; on_refuse cannot as well"
                )
        if retry_after is not None and (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, (int, float))
            or not math.isfinite(retry_after)
            or retry_after < 0
        ):
            raise ConfigError(
                f"{where}: retry_after must be a number of seconds >= 0, not {retry_after!r}"
            )
        self.retry_after = retry_after
        if control is None:
            control = ()
        elif hasattr(control, "observe"):
            control = (control,)
        elif not isinstance(control, Sequence):
            raise ConfigError(f"{where}: control must be a controller or a sequence of them")
        self.control: tuple[Any, ...] = tuple(control)
        self._options: dict[str, Any] = {
            "workers": workers,
            "capacity": capacity,
            "admission": admission,
            "on_refuse": "shed" if on_refuse is None else on_refuse,
            "deadline": deadline,
            "order": order,
        }
        # Check the stage options now, so a bad Route raises where it is written.
        self.workers_max = self.stage(_check_only).workers_max

    @property
    def order(self) -> tuple[int, ...]:
        """The classes, lowest priority first (``class_count - 1`` down to 0)."""
        return tuple(range(self.class_count - 1, -1, -1))

    def stage(
        self,
        handler: Callable[[Any], Any],
        *,
        admission: Policy | None = None,
        on_refuse: Any = None,
        control: Sequence[Any] = (),
    ) -> Stage:
        """The route's stage, running ``handler`` (options given here replace the route's)."""
        options = dict(self._options)
        if admission is not None:
            options["admission"] = admission
        elif isinstance(options["admission"], Mapping):
            options["admission"] = None  # checked above; Conditioned builds the PerClass
        if on_refuse is not None:
            options["on_refuse"] = on_refuse
        return make_stage(handler, name=self.name, control=control or self.control, **options)

    def __repr__(self) -> str:
        methods = "" if self.methods is None else f" methods={sorted(self.methods)}"
        return f"Route({self.pattern!r}, name={self.name!r}{methods})"


async def _check_only(event: Any) -> None:
    """The handler of the throwaway stage that checks a route's options."""
