"""The profiler's JSON lines, on a clock the test advances, and ``aseda plot`` on them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

import aseda
from aseda._cli import main
from aseda._profiler import Profiler, read_profile

STAGE_FIELDS = {
    "queue_length",
    "capacity",
    "workers",
    "workers_max",
    "batch",
    "in_flight",
    "senders_waiting",
    "admitted",
    "processed",
    "failed",
    "rejected",
    "shed",
    "dropped",
    "degraded",
    "redirected",
    "throughput",
    "rate_in",
    "rate_out",
    "refused_rate",
    *(
        f"{m}_{q}"
        for m in ("queue_wait", "service", "response", "recent_response")
        for q in ("p50", "p90", "p99", "count")
    ),
}


class Clock:
    """A clock that moves only when the test sets it."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pipeline() -> aseda.Graph:
    """double >> inc: two one-worker stages."""

    @aseda.stage(capacity=16)
    async def double(x: int) -> int:
        return 2 * x

    @aseda.stage(capacity=16, batch=4)
    async def inc(xs: list[int]) -> list[int]:
        return [x + 1 for x in xs]

    return aseda.Graph(double >> inc)


@pytest.mark.anyio
async def test_samples_on_demand(tmp_path: Path) -> None:
    """Each sample() writes one line with every stage's fields and rates since the last."""
    clock, path = Clock(), tmp_path / "run.jsonl"
    async with (
        pipeline().run() as running,
        Profiler(running, path, interval=None, clock=clock) as profiler,
    ):
        for i in range(10):
            assert await running.call(i) == 2 * i + 1
        clock.now += 2.0
        first = profiler.sample()
        for i in range(3):
            await running.call(i)
        clock.now += 1.0
        profiler.sample()
        clock.now += 0.5
    samples = read_profile(path)
    assert samples[0] == first
    assert [s["t"] for s in samples] == [2.0, 3.0, 3.5]  # the last one taken on exit
    assert [s["state"] for s in samples] == ["running"] * 3
    for sample in samples:
        assert list(sample["stages"]) == ["double", "inc"]
        assert set(sample["stages"]["double"]) == STAGE_FIELDS
        assert sample["bottleneck"] is None
        assert sample["decisions"] == []
    rates = [
        (
            s["stages"]["inc"]["admitted"],
            s["stages"]["inc"]["rate_in"],
            s["stages"]["inc"]["rate_out"],
        )
        for s in samples
    ]
    assert rates == [(10, 5.0, 5.0), (13, 3.0, 3.0), (13, 0.0, 0.0)]
    inc = samples[-1]["stages"]["inc"]
    assert (inc["capacity"], inc["workers"], inc["batch"], inc["processed"]) == (16, 1, 4, 13)
    assert inc["refused_rate"] == 0.0
    for key in ("response_p50", "response_p90", "response_p99"):
        assert inc[key] is None or inc[key] >= 0
    assert profiler.samples == 3


@pytest.mark.anyio
async def test_decisions_go_with_the_next_sample(tmp_path: Path) -> None:
    """A recorded decision is written once, with the sample that follows it."""
    clock, path = Clock(), tmp_path / "run.jsonl"
    async with (
        pipeline().run() as running,
        Profiler(running, path, interval=0, clock=clock) as profiler,
    ):
        clock.now += 0.25
        profiler.record_decision("double", "add worker", "queue 12 > 8", workers=2)
        profiler.record_decision("inc", "hold", "queue short")
        clock.now += 0.75
        profiler.sample()
    samples = read_profile(path)
    assert [s["decisions"] for s in samples] == [
        [
            {
                "t": 0.25,
                "stage": "double",
                "action": "add worker",
                "reason": "queue 12 > 8",
                "details": {"workers": 2},
            },
            {"t": 0.25, "stage": "inc", "action": "hold", "reason": "queue short"},
        ],
        [],
    ]


@pytest.mark.anyio
async def test_names_the_bottleneck(tmp_path: Path) -> None:
    """A stage with its only worker busy and a full queue is named with the reason."""
    gate, started = anyio.Event(), anyio.Event()

    @aseda.stage(capacity=2)
    async def held(x: int) -> int:
        started.set()
        await gate.wait()
        return x

    clock, path = Clock(), tmp_path / "run.jsonl"
    async with (
        aseda.Graph(held).run() as running,
        Profiler(running, path, interval=None, clock=clock) as profiler,
    ):
        await running.send(0)
        await started.wait()
        await running.send(1)
        await running.send(2)
        clock.now += 1.0
        record = profiler.sample()
        gate.set()
    assert record["bottleneck"] == {
        "stage": "held",
        "reason": "1/1 workers busy, queue 2/2 (full) and growing (+2 since last snapshot)",
        "score": 2.0,
    }
    assert record["stages"]["held"]["rate_in"] == 3.0


@pytest.mark.anyio
async def test_samples_on_its_interval(tmp_path: Path) -> None:
    """With an interval, the profiler's own task samples until the block ends."""
    third = anyio.Event()

    class Counting(Profiler):
        def sample(self) -> dict[str, Any]:
            record = super().sample()
            if self.samples == 3:
                third.set()
            return record

    path = tmp_path / "run.jsonl"
    async with pipeline().run() as running, Counting(running, path, interval=0.001) as profiler:
        await third.wait()
    samples = read_profile(path)
    assert len(samples) == profiler.samples >= 4  # three or more on the interval, one on exit
    times = [s["t"] for s in samples]
    assert times == sorted(times) and times[0] > 0


@pytest.mark.anyio
async def test_a_failing_write_stops_sampling_not_the_graph(tmp_path: Path) -> None:
    """An error while sampling on the interval is logged; the graph and the block go on."""
    failed = anyio.Event()

    class Failing(Profiler):
        def sample(self) -> dict[str, Any]:
            if self.samples == 1:
                failed.set()
                raise OSError("disk full")
            return super().sample()

    path = tmp_path / "run.jsonl"
    with capture_logs() as logs:
        async with pipeline().run() as running, Failing(running, path, interval=0.001):
            await failed.wait()
            assert await running.call(1) == 3
    assert len(read_profile(path)) == 1
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "profiler failed; sampling stopped"
    ]


@pytest.mark.anyio
async def test_an_error_in_the_block_leaves_as_itself(tmp_path: Path) -> None:
    """The block's error is not wrapped in a group, and the last sample is still written."""
    path = tmp_path / "run.jsonl"
    with pytest.raises(ValueError, match="boom"):
        async with (
            pipeline().run() as running,
            Profiler(running, path, interval=60.0),
        ):
            raise ValueError("boom")
    assert len(read_profile(path)) == 1


@pytest.mark.anyio
async def test_cancelled_block_writes_the_last_sample(tmp_path: Path) -> None:
    """A cancelled block still ends with a sample, taken as the graph is cancelled."""
    path = tmp_path / "run.jsonl"
    with anyio.CancelScope() as scope:
        async with (
            pipeline().run() as running,
            Profiler(running, path, interval=60.0),
        ):
            scope.cancel()
            await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert [s["state"] for s in read_profile(path)] == ["running"]


@pytest.mark.anyio
async def test_misuse(tmp_path: Path) -> None:
    """Sampling outside the block or entering twice is refused; so is a negative interval."""
    async with pipeline().run() as running:
        profiler = Profiler(running, tmp_path / "run.jsonl", interval=None)
        with pytest.raises(RuntimeError, match="not running"):
            profiler.sample()
        async with profiler:
            with pytest.raises(RuntimeError, match="already running"):
                await profiler.__aenter__()
        with pytest.raises(ValueError, match="interval"):
            Profiler(running, tmp_path / "x.jsonl", interval=-1)


def test_read_profile_skips_a_cut_last_line(tmp_path: Path) -> None:
    """A last line cut short is left out; a bad line elsewhere is an error."""
    path = tmp_path / "run.jsonl"
    path.write_text('{"t": 1}\n\n{"t": 2}\n{"t": 3, "sta')
    assert read_profile(path) == [{"t": 1}, {"t": 2}]
    path.write_text('{"t": 1}\nnot json\n{"t": 3}\n')
    with pytest.raises(ValueError, match=":2: not a JSON line"):
        read_profile(path)
    path.write_text("[1, 2]\n{}\n")
    with pytest.raises(ValueError, match=":1: not a JSON object"):
        read_profile(path)


def record_run(path: Path) -> None:
    """Profile a short run of the pipeline on asyncio, with a decision, on a test clock."""

    async def run() -> None:
        clock = Clock()
        async with (
            pipeline().run() as running,
            Profiler(running, path, interval=None, clock=clock) as profiler,
        ):
            for step in range(5):
                for i in range(step * 3):
                    await running.call(i)
                if step == 2:
                    profiler.record_decision("double", "add worker", "queue growing")
                clock.now += 1.0
                profiler.sample()

    anyio.run(run)


def test_plot_command_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``aseda plot PROFILE -o PNG`` writes a PNG and says where."""
    profile, png = tmp_path / "run.jsonl", tmp_path / "out" / "plot.png"
    png.parent.mkdir()
    record_run(profile)
    assert main(["plot", str(profile), "-o", str(png)]) == 0
    assert capsys.readouterr().out == f"wrote {png}\n"
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_plot_defaults_to_the_profile_name(tmp_path: Path) -> None:
    """Without -o the PNG sits next to the profile; null figures and bottlenecks plot too."""
    from aseda._plot import plot_profile

    profile = tmp_path / "hand.jsonl"
    lines = [
        {"t": 0.5, "stages": {"a": {"queue_length": 1, "workers": 1}}, "bottleneck": None},
        {
            "t": 1.0,
            "stages": {"a": {"queue_length": 9, "workers": 2, "rate_in": None}, "b": {}},
            "bottleneck": {"stage": "a", "reason": "1/1 workers busy", "score": 1.0},
            "decisions": [{"t": 0.8, "stage": "a", "action": "add worker", "reason": "x"}],
        },
    ]
    profile.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert plot_profile(str(profile)) == str(tmp_path / "hand.png")
    assert (tmp_path / "hand.png").read_bytes().startswith(b"\x89PNG")


def test_plot_refuses_an_empty_profile(tmp_path: Path) -> None:
    """A profile with no sample is an error, not an empty picture."""
    from aseda._plot import plot_profile

    profile = tmp_path / "empty.jsonl"
    profile.write_text("")
    with pytest.raises(ValueError, match="no samples"):
        plot_profile(profile)


def test_plot_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without matplotlib the error says what to install."""
    from aseda._plot import plot_profile

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install aseda\[plot\]"):
        plot_profile(tmp_path / "run.jsonl")


@pytest.mark.anyio
async def test_controller_decisions_reach_the_profile(tmp_path: Path) -> None:
    """A controller's decisions are written with the next sample, with no extra wiring."""
    from aseda._control import Action, Observation

    class Once:
        name = "once"

        def __init__(self) -> None:
            self.done = anyio.Event()

        def observe(self, observation: Observation) -> list[Action]:
            if self.done.is_set():
                return []
            self.done.set()
            return [Action("workers", 2, "because")]

    @aseda.stage(workers=(1, 2), control=[Once()])
    async def s(x: int) -> int:
        return x

    path = tmp_path / "p.jsonl"
    async with (
        aseda.Graph(s).run(control_interval=0.001) as running,
        aseda.Profiler(running, path, interval=None) as profiler,
    ):
        (copy,) = running.stage_run("s").controllers
        await copy.done.wait()
        profiler.sample()
    lines = path.read_text().splitlines()
    decisions = [d for line in lines for d in json.loads(line)["decisions"]]
    assert [(d["stage"], d["action"], d["reason"]) for d in decisions] == [
        ("s", "workers", "because")
    ]
