"""The stage graph as Graphviz DOT or Mermaid text, optionally with live statistics.

Both are plain text built in a fixed order (stages and edges as the graph declares them), so
the same graph and statistics always give the same string.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ._bottleneck import Bottleneck, find_bottleneck

if TYPE_CHECKING:
    from ._graph import Edge, Graph
    from ._stats import GraphStats, StageStats

__all__ = ["to_dot", "to_mermaid"]

# Graphviz style of each edge kind (its label is added by _edge_label).
_DOT_STYLE = {
    "next": [],
    "route": ["style=dashed"],
    "dead_letter": ["style=dotted", 'color="#c62828"', 'fontcolor="#c62828"'],
    "redirect": ["style=dotted"],
}
# Mermaid arrows of each edge kind (Mermaid draws dashed and dotted alike).
_MERMAID_ARROW = {"next": "-->", "route": "-.->", "dead_letter": "-.->", "redirect": "-.->"}
_KIND_LABEL = {"next": "", "route": "route", "dead_letter": "dead letter", "redirect": "redirect"}


def to_dot(graph: Graph, stats: GraphStats | None = None) -> str:
    """Describe ``graph`` in Graphviz DOT (render it with ``dot -Tpng``).

    Every stage is a box labelled with its name; with ``stats``, also its queue length and
    capacity, workers, throughput and 90th-percentile service time (when sampled). The entry stage
    is fed by a small dot and drawn bold. Route edges are dashed, redirect edges dotted,
    dead-letter edges red and dotted; an edge that closes a cycle is labelled ``back``. With
    ``stats``, the bottleneck (see :func:`aseda.find_bottleneck`) is filled red and named, with
    the reason, under the graph.

    Args:
        graph: the graph to draw.
        stats: a snapshot of it running (``running.stats()``), or None for the bare topology.

    Returns:
        The DOT source, ending with a newline.
    """
    ids = {s.name: f"s{i}" for i, s in enumerate(graph.stages)}
    bottleneck = _bottleneck(graph, stats)
    lines = [
        "digraph aseda {",
        '  graph [rankdir=LR, fontname="Helvetica"];',
        '  node [shape=box, style=rounded, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        "  entry [shape=point, width=0.12];",
    ]
    for s in graph.stages:
        label = _dot_escape("\n".join(_label_lines(s.name, _stage(stats, s.name))))
        attrs = [f'label="{label}"']
        if s.name == graph.entry:
            attrs.append("penwidth=2")
        if bottleneck is not None and s.name == bottleneck.stage:
            attrs.append('style="rounded,filled", fillcolor="#ffcdd2", color="#c62828"')
        lines.append(f"  {ids[s.name]} [{', '.join(attrs)}];")
    lines.append(f"  entry -> {ids[graph.entry]};")
    for e in graph.edges:
        attrs = list(_DOT_STYLE.get(e.kind, ["style=dotted"]))
        label = _edge_label(e)
        if label:
            attrs.append(f'label="{_dot_escape(label)}"')
        if e.back:
            attrs.append("constraint=false")
        edge = f"  {ids[e.source]} -> {ids[e.target]}"
        lines.append(f"{edge} [{', '.join(attrs)}];" if attrs else f"{edge};")
    if bottleneck is not None:
        lines.append("  labelloc=b;")
        lines.append(f'  label="{_dot_escape(f"bottleneck {bottleneck}")}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(graph: Graph, stats: GraphStats | None = None) -> str:
    """Describe ``graph`` as a Mermaid flowchart (for Markdown that renders Mermaid).

    The same picture as :func:`to_dot`: stage labels with statistics when given, a round
    ``in`` node feeding the entry stage (drawn bold), dotted route, redirect and dead-letter
    edges labelled with their kind (dead letters in red), ``back`` on an edge that closes a
    cycle, and the bottleneck filled red with the reason in its label.

    Args:
        graph: the graph to draw.
        stats: a snapshot of it running (``running.stats()``), or None for the bare topology.

    Returns:
        The Mermaid source, ending with a newline.
    """
    ids = {s.name: f"s{i}" for i, s in enumerate(graph.stages)}
    bottleneck = _bottleneck(graph, stats)
    lines = ["flowchart LR", "    entry((in))"]
    for s in graph.stages:
        text = _label_lines(s.name, _stage(stats, s.name))
        if bottleneck is not None and s.name == bottleneck.stage:
            text.append(f"bottleneck: {bottleneck.reason}")
        label = "<br/>".join(_mermaid_escape(t) for t in text)
        lines.append(f'    {ids[s.name]}["{label}"]')
    links = [f"entry --> {ids[graph.entry]}"]
    red: list[int] = []
    for e in graph.edges:
        arrow = _MERMAID_ARROW.get(e.kind, "-.->")
        label = _edge_label(e)
        if label:
            arrow += f"|{_mermaid_escape(label)}|"
        if e.kind == "dead_letter":
            red.append(len(links))
        links.append(f"{ids[e.source]} {arrow} {ids[e.target]}")
    lines.extend(f"    {link}" for link in links)
    lines.append("    classDef entry stroke-width:3px")
    lines.append(f"    class {ids[graph.entry]} entry")
    if red:
        lines.append(f"    linkStyle {','.join(map(str, red))} stroke:#c62828,color:#c62828")
    if bottleneck is not None:
        lines.append("    classDef bottleneck fill:#ffcdd2,stroke:#c62828,stroke-width:2px")
        lines.append(f"    class {ids[bottleneck.stage]} bottleneck")
    return "\n".join(lines) + "\n"


def _bottleneck(graph: Graph, stats: GraphStats | None) -> Bottleneck | None:
    if stats is None:
        return None
    found = find_bottleneck(stats, graph=graph)
    return found if found is not None and found.stage in graph else None


def _stage(stats: GraphStats | None, name: str) -> StageStats | None:
    if stats is None:
        return None
    for s in stats:
        if s.name == name:
            return s
    return None


def _edge_label(e: Edge) -> str:
    kind = _KIND_LABEL.get(e.kind, e.kind)
    if e.back:
        return f"{kind}, back" if kind else "back"
    return kind


def _label_lines(name: str, s: StageStats | None) -> list[str]:
    """A stage's label: its name, then its figures when there are statistics."""
    if s is None:
        return [name]
    capacity = "inf" if math.isinf(s.capacity) else str(int(s.capacity))
    workers = "1 worker" if s.workers == 1 else f"{s.workers} workers"
    lines = [name, f"queue {s.queue_length}/{capacity}, {workers}", format_rate(s.throughput)]
    if not math.isnan(s.service.p90):
        lines[-1] += f", service p90 {format_seconds(s.service.p90)}"
    return lines


def format_rate(per_second: float) -> str:
    """``1234.5`` -> ``"1235/s"``, ``12.34`` -> ``"12.3/s"``."""
    if per_second >= 100 or per_second == 0:
        return f"{per_second:.0f}/s"
    return f"{per_second:.1f}/s"


def format_seconds(seconds: float) -> str:
    """A duration with a unit that keeps it short: ``"850 us"``, ``"5.1 ms"``, ``"1.20 s"``."""
    if math.isnan(seconds):
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.0f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _dot_escape(text: str) -> str:
    """Quote text for a DOT string: backslashes and quotes escaped, newlines as ``\\n``."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _mermaid_escape(text: str) -> str:
    """Quote text for a Mermaid label: entity codes for the characters Mermaid parses."""
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text.replace("|", "#124;")
