"""The graph view: exact DOT and Mermaid text, with and without live statistics."""

from __future__ import annotations

import math
import shutil
import subprocess
from typing import Any

import pytest

import aseda
from aseda._graphviz import format_rate, format_seconds, to_dot, to_mermaid
from aseda._histogram import LatencySummary

NAN = math.nan


def build() -> aseda.Graph:
    """parse feeds check, which loops through retry and routes to a quoted name; parse sends
    failures to errors and refused events to overflow."""

    async def handler(x: Any) -> Any:
        return x

    parse = aseda.stage(
        name="parse", on_error=aseda.DeadLetter("errors"), on_refuse=aseda.Redirect("overflow")
    )(handler)
    check, retry, errors, overflow = (
        aseda.stage(name=n)(handler) for n in ("check", "retry", "errors", "overflow")
    )
    quoted = aseda.stage(name='say "hi"')(handler)
    return aseda.Graph(parse >> check >> retry >> check, check.routes_to(quoted), errors, overflow)


def snap(name: str, **fields: Any) -> aseda.StageStats:
    """An idle stage's snapshot with a queue of 64 and one worker, unless told otherwise."""
    values: dict[str, Any] = {
        "name": name,
        "queue_length": 0,
        "capacity": 64,
        "workers": 1,
        "workers_min": 1,
        "workers_max": 1,
        "batch": None,
        "blocking": False,
        "admitted": 0,
        "rejected": 0,
        "processed": 0,
        "failed": 0,
        "in_flight": 0,
        "senders_waiting": 0,
    }
    values.update(fields)
    return aseda.StageStats(**values)


def live() -> aseda.GraphStats:
    """check is saturated with a full queue; parse has a p90 service time."""
    return aseda.GraphStats(
        stages=(
            snap(
                "parse",
                throughput=812.4,
                service=LatencySummary(100, 0.0001, 0.0051, 0.009, 0.01, 0.0002),
            ),
            snap("check", queue_length=64, in_flight=4, workers=4, throughput=12.34),
            snap("retry", capacity=math.inf),
            snap('say "hi"'),
            snap("errors"),
            snap("overflow"),
        ),
        state="running",
        abandoned=0,
    )


DOT = """\
digraph aseda {
  graph [rankdir=LR, fontname="Helvetica"];
  node [shape=box, style=rounded, fontname="Helvetica"];
  edge [fontname="Helvetica", fontsize=10];
  entry [shape=point, width=0.12];
  s0 [label="parse", penwidth=2];
  s1 [label="check"];
  s2 [label="retry"];
  s3 [label="say \\"hi\\""];
  s4 [label="errors"];
  s5 [label="overflow"];
  entry -> s0;
  s0 -> s1;
  s1 -> s2;
  s2 -> s1 [label="back", constraint=false];
  s1 -> s3 [style=dashed, label="route"];
  s0 -> s5 [style=dotted, label="redirect"];
  s0 -> s4 [style=dotted, color="#c62828", fontcolor="#c62828", label="dead letter"];
}
"""

DOT_LIVE = """\
digraph aseda {
  graph [rankdir=LR, fontname="Helvetica"];
  node [shape=box, style=rounded, fontname="Helvetica"];
  edge [fontname="Helvetica", fontsize=10];
  entry [shape=point, width=0.12];
  s0 [label="parse\\nqueue 0/64, 1 worker\\n812/s, service p90 5.1 ms", penwidth=2];
  s1 [label="check\\nqueue 64/64, 4 workers\\n12.3/s", \
style="rounded,filled", fillcolor="#ffcdd2", color="#c62828"];
  s2 [label="retry\\nqueue 0/inf, 1 worker\\n0/s"];
  s3 [label="say \\"hi\\"\\nqueue 0/64, 1 worker\\n0/s"];
  s4 [label="errors\\nqueue 0/64, 1 worker\\n0/s"];
  s5 [label="overflow\\nqueue 0/64, 1 worker\\n0/s"];
  entry -> s0;
  s0 -> s1;
  s1 -> s2;
  s2 -> s1 [label="back", constraint=false];
  s1 -> s3 [style=dashed, label="route"];
  s0 -> s5 [style=dotted, label="redirect"];
  s0 -> s4 [style=dotted, color="#c62828", fontcolor="#c62828", label="dead letter"];
  labelloc=b;
  label="bottleneck check: 4/4 workers busy, queue 64/64 (full)";
}
"""

MERMAID = """\
flowchart LR
    entry((in))
    s0["parse"]
    s1["check"]
    s2["retry"]
    s3["say #quot;hi#quot;"]
    s4["errors"]
    s5["overflow"]
    entry --> s0
    s0 --> s1
    s1 --> s2
    s2 -->|back| s1
    s1 -.->|route| s3
    s0 -.->|redirect| s5
    s0 -.->|dead letter| s4
    classDef entry stroke-width:3px
    class s0 entry
    linkStyle 6 stroke:#c62828,color:#c62828
"""

MERMAID_LIVE = """\
flowchart LR
    entry((in))
    s0["parse<br/>queue 0/64, 1 worker<br/>812/s, service p90 5.1 ms"]
    s1["check<br/>queue 64/64, 4 workers<br/>12.3/s<br/>\
bottleneck: 4/4 workers busy, queue 64/64 (full)"]
    s2["retry<br/>queue 0/inf, 1 worker<br/>0/s"]
    s3["say #quot;hi#quot;<br/>queue 0/64, 1 worker<br/>0/s"]
    s4["errors<br/>queue 0/64, 1 worker<br/>0/s"]
    s5["overflow<br/>queue 0/64, 1 worker<br/>0/s"]
    entry --> s0
    s0 --> s1
    s1 --> s2
    s2 -->|back| s1
    s1 -.->|route| s3
    s0 -.->|redirect| s5
    s0 -.->|dead letter| s4
    classDef entry stroke-width:3px
    class s0 entry
    linkStyle 6 stroke:#c62828,color:#c62828
    classDef bottleneck fill:#ffcdd2,stroke:#c62828,stroke-width:2px
    class s1 bottleneck
"""


def test_dot_topology() -> None:
    """Without statistics: names, the entry, every edge kind and the back edge."""
    assert to_dot(build()) == DOT


def test_dot_with_stats() -> None:
    """With statistics: figures in the labels and the bottleneck filled and named."""
    assert to_dot(build(), live()) == DOT_LIVE


def test_mermaid_topology() -> None:
    """Without statistics: the same picture as a Mermaid flowchart."""
    assert to_mermaid(build()) == MERMAID


def test_mermaid_with_stats() -> None:
    """With statistics: figures in the labels and the bottleneck classed and explained."""
    assert to_mermaid(build(), live()) == MERMAID_LIVE


def test_idle_stats_name_no_bottleneck() -> None:
    """Statistics with nothing queued draw no bottleneck."""
    graph = build()
    idle = aseda.GraphStats(
        stages=tuple(snap(s.name) for s in graph.stages), state="running", abandoned=0
    )
    assert "bottleneck" not in to_dot(graph, idle)
    assert "bottleneck" not in to_mermaid(graph, idle)


def test_mermaid_escapes_its_syntax() -> None:
    """Characters Mermaid would parse become entity codes."""

    async def handler(x: Any) -> Any:
        return x

    graph = aseda.Graph(aseda.stage(name="a<b>|#1")(handler))
    assert 's0["a#lt;b#gt;#124;#35;1"]' in to_mermaid(graph)


def test_dot_escapes_backslashes_and_newlines() -> None:
    """A backslash or newline in a name cannot break the DOT string."""

    async def handler(x: Any) -> Any:
        return x

    graph = aseda.Graph(aseda.stage(name='x\\"\ny')(handler))
    assert 's0 [label="x\\\\\\"\\ny", penwidth=2];' in to_dot(graph)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(NAN, "-"), (0.00042, "420 us"), (0.0051, "5.1 ms"), (0.25, "250 ms"), (1.5, "1.50 s")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    """Durations are shown with a unit that keeps them short."""
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(("rate", "text"), [(0.0, "0/s"), (12.34, "12.3/s"), (812.4, "812/s")])
def test_format_rate(rate: float, text: str) -> None:
    """Rates keep one decimal below 100/s."""
    assert format_rate(rate) == text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_accepts_the_dot() -> None:
    """Graphviz renders both DOT texts without a complaint."""
    for text in (to_dot(build()), to_dot(build(), live())):
        done = subprocess.run(
            ["dot", "-Tsvg"], input=text, capture_output=True, text=True, timeout=30, check=False
        )
        assert (done.returncode, done.stderr) == (0, "")
        assert "<svg" in done.stdout
