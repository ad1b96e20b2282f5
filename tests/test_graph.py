"""Building graphs: composition and the checks made when a graph is built."""

from __future__ import annotations

from typing import Any

import pytest

import aseda


def make(name: str, **options: Any) -> aseda.Stage:
    async def handler(x: Any) -> Any:
        return x

    return aseda.stage(name=name, **options)(handler)


def edges(graph: aseda.Graph) -> set[tuple[str, str, str, bool]]:
    return {(e.source, e.target, e.kind, e.back) for e in graph.edges}


def test_chain() -> None:
    """a >> b >> c is a chain with a as entry."""
    a, b, c = make("a"), make("b"), make("c")
    g = aseda.Graph(a >> b >> c)
    assert g.entry == "a"
    assert [s.name for s in g.stages] == ["a", "b", "c"]
    assert edges(g) == {("a", "b", "next", False), ("b", "c", "next", False)}


def test_fan_out_and_fan_in() -> None:
    """a >> [b, c] >> d fans out to b and c and back in to d."""
    a, b, c, d = (make(n) for n in "abcd")
    g = aseda.Graph(a >> [b, c] >> d)
    assert g.successors("a") == ("b", "c")
    assert edges(g) >= {("b", "d", "next", False), ("c", "d", "next", False)}


def test_list_on_the_left() -> None:
    """[a, b] >> c works through __rrshift__."""
    a, b, c = make("a"), make("b"), make("c")
    g = aseda.Graph([a, b] >> c)
    assert set(g.successors("a")) == {"c"} and set(g.successors("b")) == {"c"}


def test_cycle_marks_back_edge() -> None:
    """The edge closing a cycle is marked back, the rest are not."""
    parse, cache, load, send = (make(n) for n in ("parse", "cache", "load", "send"))
    g = aseda.Graph(parse >> cache >> send, cache.routes_to(load), load >> cache)
    assert edges(g) == {
        ("parse", "cache", "next", False),
        ("cache", "send", "next", False),
        ("cache", "load", "route", False),
        ("load", "cache", "next", True),
    }


def test_routes_by_name() -> None:
    """routes_to accepts stage names resolved when the graph is built."""
    a, b = make("a"), make("b")
    g = aseda.Graph(a, b, a.routes_to("b"))
    assert g.successors("a", "route") == ("b",)


def test_single_stage_graph() -> None:
    """A graph may be a single stage."""
    assert aseda.Graph(make("solo")).entry == "solo"


def test_explicit_entry() -> None:
    """entry= picks the default stage for send()."""
    a, b = make("a"), make("b")
    assert aseda.Graph(a >> b, entry="a").entry == "a"
    with pytest.raises(aseda.GraphError, match="entry"):
        aseda.Graph(a >> b, entry="zzz")


def test_duplicate_names() -> None:
    """Two different stages with one name are refused; one stage used twice is fine."""
    a, b, c = make("a"), make("b"), make("b")
    aseda.Graph(a >> b, b >> make("c"))
    with pytest.raises(aseda.GraphError, match="named 'b'"):
        aseda.Graph(a >> b >> c)


def test_unknown_route() -> None:
    """A route to a name that is not in the graph is refused."""
    a = make("a")
    with pytest.raises(aseda.GraphError, match="'nowhere'"):
        aseda.Graph(a.routes_to("nowhere"))


def test_unknown_dead_letter() -> None:
    """A dead-letter stage must be in the graph."""
    a = make("a", on_error=aseda.DeadLetter("errors"))
    with pytest.raises(aseda.GraphError, match="dead-letter"):
        aseda.Graph(a)


def test_self_dead_letter() -> None:
    """A stage cannot be its own dead-letter stage."""
    a = make("a", on_error=aseda.DeadLetter("a"))
    with pytest.raises(aseda.GraphError, match="own dead-letter"):
        aseda.Graph(a)


def test_unreachable_cycle() -> None:
    """A cycle with no way in is unreachable."""
    a, b, c, d = (make(n) for n in "abcd")
    with pytest.raises(aseda.GraphError, match="'c', 'd'"):
        aseda.Graph(a >> b, c >> d >> c)


def test_extra_sources_are_reachable() -> None:
    """A second source stage is fine: it can be fed with send(to=...)."""
    a, b, c = make("a"), make("b"), make("c")
    aseda.Graph(a >> c, b >> c)


@pytest.mark.parametrize("bad", [lambda x: x, 42, [], "name"])
def test_not_a_stage(bad: Any) -> None:
    """Anything but stages and flows is refused with a hint."""
    with pytest.raises(aseda.GraphError, match="not a stage"):
        aseda.Graph(bad)
    with pytest.raises(aseda.GraphError, match="not a stage"):
        make("a") >> bad


def test_empty_graph() -> None:
    """A graph needs a stage."""
    with pytest.raises(aseda.GraphError):
        aseda.Graph()


def test_stage_reusable_across_graphs() -> None:
    """A Stage is a definition: it may sit in several graphs."""
    a, b, c = make("a"), make("b"), make("c")
    assert aseda.Graph(a >> b).stages[0] is aseda.Graph(a >> c).stages[0]
