"""examples/http_hello.py runs as shipped: a subprocess served over HTTP, talked to with httpx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_http_hello_serves_then_exits(backend: str) -> None:
    """It prints its URL, answers, stops after --requests N and prints its statistics."""
    with subprocess.Popen(
        [sys.executable, "examples/http_hello.py", "--port", "0", "--requests", "4",
         "--backend", backend],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on http://127.0.0.1:"), line
            url = line.split()[-1]
            with httpx.Client(base_url=url, trust_env=False, timeout=10) as client:
                world = client.get("/")
                ada = client.get("/hello/a%3Cb%3E")
                missing = client.get("/nope")
                post = client.post("/", content=b"x")
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert world.status_code == 200 and "Hello, world!" in world.text
    assert ada.status_code == 200 and "Hello, a&lt;b&gt;!" in ada.text
    assert missing.status_code == 404
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    assert "4 requests on 1 connections" in out
    assert "responses: {200: 2, 404: 1, 405: 1}" in out
    assert "state: stopped, abandoned: 0" in out
