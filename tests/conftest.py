"""Every async test runs on asyncio and trio (and asyncio+uvloop where uvloop is installed)."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

_BACKENDS: list[Any] = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("trio", {}), id="trio"),
]
if importlib.util.find_spec("uvloop") is not None:
    _BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))


@pytest.fixture(params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def _drop(logger: Any, method: str, event: Any) -> Any:
    raise structlog.DropEvent


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    # Keep the console quiet; tests that assert on log events use capture_logs(), which
    # swaps these processors for its own.
    structlog.configure(processors=[_drop])


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """Every test must leave no aseda thread behind."""
    yield
    stray = [t.name for t in threading.enumerate() if t.name.startswith("aseda:")]
    assert stray == [], f"aseda threads left running: {stray}"
