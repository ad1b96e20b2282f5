"""The runtime's side of feedback control: it observes each stage on a period and applies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

import aseda
from aseda._control import Action, Observation

pytestmark = pytest.mark.anyio


class Scripted:
    """A controller that returns scripted actions and records what it saw."""

    name = "scripted"

    def __init__(self, *script: Sequence[Action]) -> None:
        self.script = list(script)
        self.seen: list[Observation] = []
        self.ran = anyio.Event()

    def observe(self, observation: Observation) -> Sequence[Action]:
        self.seen.append(observation)
        if not self.script:
            self.ran.set()
            return ()
        return self.script.pop(0)


async def ident(x: Any) -> Any:
    return x


async def wait_for(controller: Scripted, running: aseda.RunningGraph, stage: str) -> Scripted:
    """The run's own copy of a stage's controller, once its script is used up."""
    run = running.stage_run(stage)
    (copy,) = [c for c in run.controllers if isinstance(c, Scripted)]
    await copy.ran.wait()
    return copy


async def test_workers_and_batch_actions_are_applied_and_logged() -> None:
    """Actions resize the pool and the batch, within bounds; stats show the last decision."""
    script = Scripted(
        [Action("workers", 3, "grow"), Action("batch", 99, "bigger")],
        [Action("workers", 0, "shrink below min")],
    )

    @aseda.stage(workers=(1, 4), batch=8, control=[script])
    async def batched(xs: list[int]) -> list[int]:
        return xs

    with capture_logs() as logs:
        async with aseda.Graph(batched).run(control_interval=0.001) as running:
            copy = await wait_for(script, running, "batched")
            stats = running.stats()["batched"]
    assert (stats.workers, stats.batch) == (1, 8)  # clamped to min 1 and max batch 8
    assert stats.control == ("scripted",)
    assert stats.last_decision == "scripted: shrink below min"
    decisions = [e for e in logs if e["event"] == "controller decision"]
    assert [(e["action"], e["value"]) for e in decisions] == [
        ("workers", 3),
        ("batch", 99),
        ("workers", 0),
    ]
    assert script.seen == []  # the stage's own controller object is never used: runs copy it
    assert copy.seen[0].stage == "batched" and copy.seen[0].workers_max == 4


async def test_observation_counts_a_period() -> None:
    """Arrivals, completions and response samples are counted per period."""
    script = Scripted([])
    async with aseda.Graph(aseda.stage(name="s")(ident)).run(
        control=[script], control_interval=0.001
    ) as running:
        for i in range(5):
            await running.call(i)
        copy = await wait_for(script, running, "s")
    seen = copy.seen
    assert sum(o.arrivals for o in seen) <= 5 and sum(o.completions for o in seen) <= 5
    assert all(o.interval > 0 for o in seen)


async def test_observation_counts_offered_and_refused_per_class() -> None:
    """With a PerClass policy, each class's offered and refused events reach the controller."""
    script = Scripted([])
    policy = aseda.PerClass(
        {"low": aseda.TokenBucket(0.001, burst=1), "high": None}, classify=lambda e: e[0]
    )
    stage = aseda.stage(name="s", admission=policy, control=[script])(ident)
    async with aseda.Graph(stage).run(control_interval=0.001) as running:
        # No checkpoint between these sends, so the first observation holds them all.
        admitted = [running.send_lossy((cls, i)) for cls in ("low", "high") for i in range(3)]
        copy = await wait_for(script, running, "s")
    assert admitted == [True, False, False, True, True, True]
    assert copy.seen[0].class_offered == {"low": 3, "high": 3}
    assert copy.seen[0].class_refused == {"low": 2, "high": 0}


async def test_rate_threshold_credits_degrade_actions() -> None:
    """Admission actions install or tune the policy; degrade switches the handler."""

    def cheap(x: int) -> str:
        return f"cheap {x}"

    script = Scripted(
        [Action("rate", 50, "limit"), Action("degrade", 1, "over target")],
    )
    stage = aseda.stage(name="s", on_refuse=aseda.Degrade(cheap), control=[script])(ident)
    async with aseda.Graph(stage).run(control_interval=0.001) as running:
        await wait_for(script, running, "s")
        assert await running.call(1) == "cheap 1"
        stats = running.stats()["s"]
        assert stats.admission is not None and "rate=50" in stats.admission
        run = running.stage_run("s")
        run.apply(running._tg, "manual", Action("degrade", 0, "back under"))  # type: ignore[arg-type]
        assert await running.call(2) == 2
        run.apply(running._tg, "manual", Action("threshold", 7, "t"))  # type: ignore[arg-type]
        assert running.stats()["s"].admission == "Threshold(7)"
        run.apply(running._tg, "manual", Action("credits", 3, "c"))  # type: ignore[arg-type]
        assert running.stats()["s"].admission == "Credits(3)"


async def test_a_rate_action_keeps_the_stages_own_policy() -> None:
    """A rate controller on a stage with a Threshold adds a bucket beside it, not instead."""
    script = Scripted([Action("rate", 1000, "limit")])
    gate = anyio.Event()

    async def held(x: int) -> int:
        await gate.wait()
        return x

    stage = aseda.stage(name="s", admission=aseda.Threshold(2), workers=1, control=[script])(held)
    async with aseda.Graph(stage).run(control_interval=0.001) as running:
        await wait_for(script, running, "s")
        assert running.stats()["s"].admission.startswith("Threshold(2) + TokenBucket(rate=1000")
        admitted = [running.send_lossy(i) for i in range(4)]
        refusals = running.stats()["s"].refusals
        gate.set()
    # Two queued, then the threshold refuses (the bucket had tokens to spare).
    assert admitted == [True, True, False, False]
    assert refusals == {"over threshold": 2}


async def test_switching_control_off_and_a_broken_controller() -> None:
    """set_control(False) stops observations; a controller that raises is removed, logged."""

    class Broken:
        name = "broken"

        def observe(self, observation: Observation) -> Sequence[Action]:
            raise RuntimeError("bug")

    script = Scripted([])
    with capture_logs() as logs:
        async with aseda.Graph(aseda.stage(name="s")(ident)).run(
            control={"s": [Broken(), script]}, control_interval=0.001
        ) as running:
            await wait_for(script, running, "s")
            running.set_control("s", False)
            assert running.stats()["s"].control == ()
    assert [e["event"] for e in logs].count("controller failed and was removed") == 1


async def test_bad_control_options() -> None:
    """A non-controller, an unknown stage name or a bad interval is a ConfigError."""
    graph = aseda.Graph(aseda.stage(name="s")(ident))
    for options in (
        {"control": [object()]},
        {"control": {"nope": []}},
        {"control_interval": 0},
    ):
        with pytest.raises(aseda.ConfigError):
            async with graph.run(**options):
                pass


async def test_an_installed_bucket_bursts_at_the_rate_in_force() -> None:
    """The bucket aseda installs for a rate controller keeps 0.1 s of burst at each new rate."""
    script = Scripted([Action("rate", 5000, "start high")], [Action("rate", 20, "cut")])
    stage = aseda.stage(name="s", control=[script])(ident)
    async with aseda.Graph(stage).run(control_interval=0.001) as running:
        await wait_for(script, running, "s")
        bucket = running.stage_run("s").policy
        assert isinstance(bucket, aseda.TokenBucket)
        assert (bucket.rate, bucket.burst) == (20, 2)
