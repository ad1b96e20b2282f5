"""The ``aseda`` command: ``aseda top URL`` and ``aseda plot PROFILE.jsonl``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aseda`` console script."""
    parser = argparse.ArgumentParser(prog="aseda", description="aseda's command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)

    top = commands.add_parser("top", help="a live table of every stage, from a stats endpoint")
    top.add_argument("url", help="the JSON stats endpoint, e.g. http://127.0.0.1:9000/stats")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one frame and exit")

    plot = commands.add_parser("plot", help="plot a profiler JSON-lines file as PNG panels")
    plot.add_argument("profile", help="the profiler's JSON-lines file")
    plot.add_argument("-o", "--output", help="PNG to write (default: PROFILE with .png)")

    args = parser.parse_args(argv)
    if args.command == "top":
        from ._top import run_top

        return run_top(args.url, interval=args.interval, once=args.once)
    from ._plot import plot_profile

    written = plot_profile(args.profile, args.output)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
