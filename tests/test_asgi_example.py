"""docs/asgi.md and examples/asgi_app.py: the examples run as shown."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "asgi.md"
EXAMPLE = ROOT / "examples" / "asgi_app.py"


def _blocks() -> list[tuple[str, str | None]]:
    """Each python block of the page, with the output block that follows it (if any)."""
    text = DOCS.read_text()
    found = re.finditer(r"```python\n(.*?)```(?:\n\nOutput:\n\n```text\n(.*?)```)?", text, re.S)
    return [(m.group(1), m.group(2)) for m in found]


def test_the_ten_line_example_is_the_example_file() -> None:
    """The example at the top of the page is the start of examples/asgi_app.py, verbatim."""
    first, output = _blocks()[0]
    assert output is None
    assert first in EXAMPLE.read_text()
    assert len([line for line in first.splitlines() if line.strip()]) <= 15


@pytest.mark.parametrize("index", range(1, len(_blocks())))
def test_docs_block_prints_its_output(index: int) -> None:
    """Every other python block runs and prints exactly the output shown under it."""
    code, expected = _blocks()[index]
    assert expected is not None, "every runnable block of docs/asgi.md shows its output"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"docs/asgi.md block {index}", "exec"), {"__name__": "__main__"})
    assert out.getvalue() == expected


def test_example_self_test_runs() -> None:
    """`asgi_app.py --requests N` serves the example under uvicorn and sends N at once."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--requests", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = done.stdout
    assert out.startswith("30 requests at once to /report (4 workers, 8 queued at most):\n")
    counts = {int(s): int(n) for s, n in re.findall(r"^  (\d+): (\d+)", out, re.M)}
    assert set(counts) <= {200, 503} and sum(counts.values()) == 30
    assert 1 <= counts[200] <= 12  # 4 served and 8 queued at most, before any finished
    if 503 in counts:
        assert f"503: {counts[503]} (Retry-After: 1)" in out
    row = re.search(r"^/report\s+\S+\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.M)
    assert row is not None, out
    admitted, rejected, processed, failed = map(int, row.groups())
    assert (admitted, rejected, processed, failed) == (
        counts[200],
        counts.get(503, 0),
        counts[200],
        0,
    )
