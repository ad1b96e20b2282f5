"""Declaring stages: options are checked when the stage is declared."""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest

import aseda


async def ident(x: Any) -> Any:
    return x


def sync_ident(x: Any) -> Any:
    return x


def test_defaults() -> None:
    """A bare decorator gives a bounded, single-worker, per-event async stage."""
    s = aseda.stage(ident)
    assert (s.name, s.capacity, s.batch, s.blocking, s.on_error) == (
        "ident",
        aseda.DEFAULT_CAPACITY,
        None,
        False,
        "log",
    )
    assert (s.workers_min, s.workers_initial, s.workers_max) == (1, 1, 1)


def test_decorator_with_options() -> None:
    """Options given to the decorator land on the Stage."""

    @aseda.stage(name="p", capacity=10, workers=(2, 8), batch=4, on_error="fail")
    async def parse(items: list[Any]) -> None:
        return None

    assert (parse.name, parse.capacity, parse.batch, parse.on_error) == ("p", 10, 4, "fail")
    assert (parse.workers_min, parse.workers_initial, parse.workers_max) == (2, 2, 8)


def test_workers_three_tuple() -> None:
    """(min, initial, max) sets the starting pool size."""
    s = aseda.stage(workers=(1, 3, 5))(ident)
    assert (s.workers_min, s.workers_initial, s.workers_max) == (1, 3, 5)


def test_plain_def_is_blocking() -> None:
    """A plain def runs on threads without saying so."""
    assert aseda.stage(sync_ident).blocking is True


def test_unbounded_only_on_request() -> None:
    """math.inf is accepted as an explicit unbounded capacity."""
    assert aseda.stage(capacity=aseda.UNBOUNDED)(ident).capacity == math.inf


def test_partial_of_async_is_async() -> None:
    """functools.partial over an async def is still an async handler."""

    async def add(n: int, x: int) -> int:
        return x + n

    s = aseda.stage(name="add1")(functools.partial(add, 1))
    assert s.blocking is False


def test_callable_object_kinds() -> None:
    """A callable object is classified by its __call__."""

    class Async:
        async def __call__(self, x: Any) -> Any:
            return x

    class Sync:
        def __call__(self, x: Any) -> Any:
            return x

    assert aseda.stage(name="a")(Async()).blocking is False
    assert aseda.stage(name="s")(Sync()).blocking is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": -5}, "capacity"),
        ({"capacity": 2.5}, "capacity"),
        ({"capacity": "10"}, "capacity"),
        ({"capacity": True}, "capacity"),
        ({"workers": 0}, "at least one worker"),
        ({"workers": (4, 2)}, "greater than max"),
        ({"workers": (1, 9, 4)}, "outside"),
        ({"workers": (1, 2, 3, 4)}, "workers must be"),
        ({"workers": 1.5}, "workers must be"),
        ({"batch": 0}, "batch"),
        ({"batch": True}, "batch"),
        ({"on_error": "ignore"}, "on_error"),
        ({"name": ""}, "name"),
        ({"init": 3}, "not callable"),
    ],
)
def test_bad_options(options: dict[str, Any], message: str) -> None:
    """Every invalid option raises ConfigError naming the problem, at declaration."""
    with pytest.raises(aseda.ConfigError, match=message):
        aseda.stage(**options)(ident)


def test_not_callable() -> None:
    """A handler that cannot be called is refused."""
    with pytest.raises(aseda.ConfigError, match="callable"):
        aseda.stage(42)  # type: ignore[call-overload]


def test_sync_handler_declared_async() -> None:
    """A plain def with blocking=False would block the event loop: refused."""
    with pytest.raises(aseda.GraphError, match="plain def"):
        aseda.stage(blocking=False)(sync_ident)


def test_async_handler_declared_blocking() -> None:
    """An async def cannot run on a thread."""
    with pytest.raises(aseda.GraphError, match="async def"):
        aseda.stage(blocking=True)(ident)


def test_generator_handlers_refused() -> None:
    """Generators are refused with a pointer to Many."""

    async def agen(x: Any) -> Any:
        yield x

    def gen(x: Any) -> Any:
        yield x

    for fn in (agen, gen):
        with pytest.raises(aseda.GraphError, match="Many"):
            aseda.stage(fn)


def test_config_error_is_value_error() -> None:
    """ConfigError is a ValueError and an AsedaError, so either catch works."""
    with pytest.raises(ValueError):  # noqa: PT011 - the point is the built-in base
        aseda.stage(capacity=0)(ident)
    assert issubclass(aseda.GraphError, aseda.ConfigError)


@pytest.mark.anyio
async def test_calling_a_stage_calls_its_handler() -> None:
    """A stage is callable like its handler, for unit tests."""
    s = aseda.stage(ident)
    assert await s(5) == 5


def test_hooks_registered() -> None:
    """on_init/on_close decorators append hooks in order."""
    s = aseda.stage(ident)

    @s.on_init
    def first() -> None: ...

    @s.on_close
    async def last() -> None: ...

    assert s.init_hooks == (first,)
    assert s.close_hooks == (last,)


@pytest.mark.parametrize("capacity", [float("nan"), -math.inf, 0.0])
def test_odd_capacities(capacity: float) -> None:
    """NaN, -inf and 0.0 are ConfigErrors, not ValueError/OverflowError from int()."""
    with pytest.raises(aseda.ConfigError, match="capacity"):
        aseda.stage(capacity=capacity)(ident)


def test_options_are_fixed() -> None:
    """A declared stage's options cannot be changed behind the validation's back."""
    s = aseda.stage(ident)
    with pytest.raises(AttributeError, match="fixed"):
        s.capacity = 0  # type: ignore[misc]


def test_default_names_are_stable() -> None:
    """Partials are named for their function, callable objects for their class."""

    class Render:
        async def __call__(self, x: Any) -> Any:
            return x

    assert aseda.stage(functools.partial(ident)).name == "ident"
    assert aseda.stage(Render()).name == "Render"


def test_handler_with_options_positionally() -> None:
    """stage(handler, option=...) works as well as the decorator forms."""
    assert aseda.stage(ident, capacity=8).capacity == 8


def test_control_option_checked_when_declared() -> None:
    """control= takes controllers only, checked at declaration like every other option."""
    with pytest.raises(aseda.ConfigError, match="not a controller"):
        aseda.stage(control=[object()])(ident)
    assert aseda.stage(control=[aseda.WorkerPool()])(ident).control[0].name == "workers"
