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


def test_conditioning_example_runs() -> None:
    """The load-conditioning example answers every request: results, busy, or shed."""
    out = subprocess.run(
        [sys.executable, "examples/conditioning.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "answers:" in out and "refusals by reason:" in out


def test_observe_and_control_example_runs(tmp_path: Path) -> None:
    """The controller example grows the pool, prints the graph and writes a profile plot."""
    out = subprocess.run(
        [sys.executable, "examples/observe_and_control.py", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "flowchart LR" in out and "route workers now:" in out
    assert (tmp_path / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
