"""The examples run as shipped (a short run: figures are the benchmarks' business)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_spike_demo_runs(backend: str) -> None:
    """The demo prints both runs' phase tables and per-stage statistics."""
    out = subprocess.run(
        [sys.executable, "examples/spike_demo.py", "--scale", "0.1", "--backend", backend],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "bounded queues" in out and "unbounded queues" in out
    assert out.count("state: stopped, abandoned: 0") == 2
    for stage in ("parse", "lookup", "render", "respond"):
        assert stage in out
