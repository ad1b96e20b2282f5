"""The public API is curated: __all__ is complete, documented, and reports the package."""

from __future__ import annotations

import inspect

import aseda


def test_all_names_exist_and_are_documented() -> None:
    """Every name in __all__ exists and has a docstring of its own."""
    for name in aseda.__all__:
        obj = getattr(aseda, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name


def test_public_objects_report_the_package() -> None:
    """Classes and functions say aseda.X, not aseda._private.X."""
    for name in aseda.__all__:
        obj = getattr(aseda, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "aseda", name


def test_nothing_public_is_left_out() -> None:
    """Public-looking attributes of the package are listed in __all__."""
    import types

    public = {
        n
        for n, v in vars(aseda).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)  # aseda.bench
    }
    assert public - set(aseda.__all__) == set()


def test_typed_marker_shipped() -> None:
    """py.typed is present, so type checkers read aseda's annotations."""
    from importlib.resources import files

    assert files("aseda").joinpath("py.typed").is_file()
