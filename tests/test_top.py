"""``aseda top``: frames rendered from a real running graph's endpoint, rates, errors."""

from __future__ import annotations

import functools
import io
import os
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

import aseda
from aseda import _cli, _top
from aseda._endpoint import serve_stats
from aseda._top import normalize_url, render_frame, run_top

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def loaded_graph() -> AsyncIterator[aseda.RunningGraph]:
    """A three-stage graph whose last stage is held: full queues upstream of it."""
    gate = anyio.Event()

    @aseda.stage(capacity=4)
    async def parse(x: int) -> int:
        return x

    @aseda.stage(capacity=aseda.UNBOUNDED, workers=(1, 8))
    async def lookup(x: int) -> int:
        return x

    @aseda.stage(capacity=2)
    async def respond(x: int) -> int:
        if x >= 3:
            await gate.wait()
        return x

    async with aseda.Graph(parse >> lookup >> respond).run() as running:
        assert [await running.call(x) for x in range(3)] == [0, 1, 2]
        for x in range(3, 6):
            await running.send(x)
        await anyio.wait_all_tasks_blocked()
        yield running
        gate.set()


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=140, color_system=None), out


def render(renderable: Any, width: int = 140) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


async def test_once_renders_every_stage() -> None:
    """One frame against a running graph names every stage, its queue, state and bottleneck."""
    async with loaded_graph() as running, serve_stats(running) as endpoint:
        screen, out = console()
        top = functools.partial(run_top, endpoint.url, once=True, console=screen)
        assert await anyio.to_thread.run_sync(top) == 0
        stats = running.stats()
    text = out.getvalue()
    for s in stats:
        assert s.name in text
    assert "state: running" in text
    assert "bottleneck: respond" in text
    assert "2/2" in text and "0/inf" in text and "1/8" in text  # queues, a resizable pool
    assert "admitted" in text and "admitted/s" not in text  # the first frame shows totals
    assert endpoint.url in text


async def test_cli_once(capsys: pytest.CaptureFixture[str]) -> None:
    """``aseda top URL --once`` prints one frame on stdout and exits 0."""
    async with loaded_graph() as running, serve_stats(running) as endpoint:
        main = functools.partial(_cli.main, ["top", endpoint.url, "--once"])
        assert await anyio.to_thread.run_sync(main) == 0
    out = capsys.readouterr().out
    for name in ("parse", "lookup", "respond", "state: running"):
        assert name in out


async def test_live_mode_shows_rates() -> None:
    """Live mode redraws; frames after the first show rates per second."""
    async with loaded_graph() as running, serve_stats(running) as endpoint:
        screen, out = console()
        top = functools.partial(run_top, endpoint.url, interval=0.01, console=screen, max_frames=3)
        assert await anyio.to_thread.run_sync(top) == 0
    text = out.getvalue()
    assert "processed/s" in text and "rates over" in text


async def test_ctrl_c_exits_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in live mode leaves with exit code 0."""

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_top, "_sleep", interrupt)
    async with loaded_graph() as running, serve_stats(running) as endpoint:
        screen, out = console()
        top = functools.partial(run_top, endpoint.url, console=screen)
        assert await anyio.to_thread.run_sync(top) == 0
    assert "respond" in out.getvalue()


async def test_not_a_stats_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    """A page that is missing, or not a stats snapshot, is an error: exit code 2."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with aseda.Graph(echo).run() as running, serve_stats(running) as endpoint:
        missing = functools.partial(run_top, endpoint.base_url + "/nope", once=True)
        assert await anyio.to_thread.run_sync(missing) == 2
        assert "HTTP 404" in capsys.readouterr().err
        index = functools.partial(run_top, endpoint.base_url + "/index.html", once=True)
        assert await anyio.to_thread.run_sync(index) == 2
        assert "did not answer JSON" in capsys.readouterr().err


def test_unreachable_url(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL nobody listens on prints a clear error and exits 2."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert run_top(f"127.0.0.1:{port}", once=True, timeout=5) == 2
    err = capsys.readouterr().err
    assert f"aseda top: cannot reach http://127.0.0.1:{port}/stats" in err


def test_bad_interval(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-positive interval is refused before anything is fetched."""
    assert run_top("127.0.0.1:1", interval=0) == 2
    assert "--interval" in capsys.readouterr().err


def test_without_rich(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without rich, aseda top says which extra to install and exits 2."""
    monkeypatch.setitem(sys.modules, "rich", None)
    assert run_top("127.0.0.1:1", once=True) == 2
    assert "pip install 'aseda[top]'" in capsys.readouterr().err


def test_normalize_url() -> None:
    """host:port means the endpoint's /stats page."""
    assert normalize_url("127.0.0.1:9000") == "http://127.0.0.1:9000/stats"
    assert normalize_url("http://127.0.0.1:9000/") == "http://127.0.0.1:9000/stats"
    assert normalize_url("http://h:1/custom?x=1") == "http://h:1/custom?x=1"


def stage(name: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "queue_length": 0,
        "capacity": 100,
        "workers": 1,
        "workers_min": 1,
        "workers_max": 1,
        "admitted": 0,
        "processed": 0,
        "rejected": 0,
        "shed": 0,
        "failed": 0,
        "in_flight": 0,
        "response": {"count": 0, "p50": None, "p90": None, "p99": None},
    }
    return {**base, **fields}


def test_frame_rates_between_snapshots() -> None:
    """Rates are the counters' growth over the snapshots' own times, or the given interval."""
    before = {"state": "running", "time": 100.0, "stages": [stage("a", processed=10)]}
    after = {
        "state": "draining",
        "time": 102.0,
        "elapsed": 75.0,
        "abandoned": 0,
        "bottleneck": {"stage": "a", "reason": "1/1 workers busy", "score": 1.0},
        "stages": [
            stage(
                "a",
                admitted=50,
                processed=30,
                queue_length=95,
                rejected=3,
                shed=4,
                response={"count": 5, "p50": 0.0012, "p90": 0.25, "p99": 12.0},
            )
        ],
    }
    text = render(render_frame(after, before, elapsed=99.0))
    row = next(line for line in text.splitlines() if line.lstrip().startswith("a *"))
    assert "95/100" in row and "10.0" in row and "25.0" in row  # (30-10)/2 and 50/2
    assert " 7 " in row  # rejected + shed
    assert "1.2/250/12,000" in row
    assert "state: draining" in text and "elapsed: 1:15" in text
    assert "bottleneck: a: 1/1 workers busy" in text and "rates over 2.0s" in text

    untimed = render(render_frame({"stages": [stage("b", processed=9)]}, {"stages": []}, 3.0))
    assert "processed/s" in untimed  # a stage new since the last frame shows its total
    assert " 9 " in untimed


def test_frame_first_and_odd_snapshots() -> None:
    """The first frame shows totals; unbounded queues and missing latencies render plainly."""
    snapshot = {
        "state": "running",
        "stages": [stage("u", capacity="inf", queue_length=3, processed=1234567), {"x": 1}],
    }
    text = render(render_frame(snapshot, None, 0.0, title="t"))
    assert "3/inf" in text and "1,234,567" in text and "totals since start" in text
    assert "processed/s" not in text
    assert "-/-/-" in text  # no latency yet
    half = render(render_frame({"stages": [stage("q", queue_length=50)]}, None, 0.0))
    assert "50/100  ███···" in half
    raw = io.BytesIO()
    ascii_file = io.TextIOWrapper(raw, encoding="ascii")
    Console(file=ascii_file, width=140, color_system=None).print(
        render_frame({"stages": [stage("q", queue_length=50)]}, None, 0.0)
    )
    ascii_file.flush()
    assert b"###..." in raw.getvalue()  # an ASCII-only console gets an ASCII bar


DOCS = Path(__file__).resolve().parents[1] / "docs" / "observe-metrics.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_docs_examples_run(code: str) -> None:
    """Every Python example of docs/observe-metrics.md runs and prints something."""
    bin_dir = str(Path(sys.executable).parent)  # where the aseda console script is
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=DOCS.parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
