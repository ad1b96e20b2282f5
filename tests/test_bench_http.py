"""Smoke tests of the Haboob comparison's parts (benchmarks/http*.py): the baseline servers,
the load generator and the targets' arithmetic. Timings are the benchmark's business; these
only check that each part works, over real sockets and processes."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks import http as bench
from examples.haboob import fileset

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, uses taskset")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> fileset.FileSet:
    return fileset.generate(tmp_path_factory.mktemp("docroot"), directories=1)


@pytest.mark.parametrize("kind", ["threads", "pool150", "uvicorn"])
def test_baseline_serves_files_intact_over_keep_alive(kind: str, files: fileset.FileSet) -> None:
    paths = ["/dir00000/class3_9", "/dir00000/class0_1", "/dir00000/class2_5"]
    with bench.ServerProcess(kind, files.root, cpu=None) as server:
        assert server.alive()
        with httpx.Client(base_url=server.url) as client:
            peers = set()
            for path in paths:
                response = client.get(path)
                assert response.status_code == 200
                assert response.http_version == "HTTP/1.1"
                assert hashlib.sha256(response.content).hexdigest() == files.digest(path)
                peers.add(response.extensions["network_stream"].get_extra_info("client_addr"))
            assert len(peers) == 1, "every request should reuse the one keep-alive connection"
            assert client.get("/dir00000/nothing").status_code == 404
    assert server.returncode == 0


def test_load_generator_prints_its_report(files: fileset.FileSet) -> None:
    with bench.ServerProcess("threads", files.root, cpu=None) as server:
        command = [
            sys.executable,
            "-m",
            "benchmarks.http_load",
            "--port",
            str(server.port),
            "--root",
            str(files.root),
            "--clients",
            "2",
            "--duration",
            "0.8",
            "--warmup",
            "0.2",
        ]
        report = bench.run_load(command, timeout=30)
    assert report["clients"] == 2
    assert report["ok"] > 0
    assert report["errors"] == report["refused"] == 0
    assert report["bytes"] > 0 and report["mbytes_per_s"] > 0
    assert len(report["client_ok"]) == 2 and all(n > 0 for n in report["client_ok"])
    assert 0.5 <= report["jain"] <= 1.0
    lat = report["latency"]
    assert 0 < lat["p50"] <= lat["max"]
    assert report["connections"] >= 2  # a new connection every 5 requests
    assert report["generator"]["cpu_seconds"] > 0


def test_hold_keeps_connections_open(files: fileset.FileSet, tmp_path: Path) -> None:
    cfg = bench.parse_args(["--quick", "--no-pin", "--root", str(files.root)])
    result = bench.hold(cfg, "threads", 40)
    assert "error" not in result
    assert result["open"]["ok"] == 40
    assert result["after"]["Threads"] > result["before"]["Threads"]  # a thread per connection
    assert result["held"] > 0 and result["kb_per_connection"] is not None
    assert result["done"]["second"] == {"ok": 40}
    assert result["done"]["reconnects"] == 0
    assert result["alive"]


def _point(server: str, clients: int, mbps: float, jain: float, max_s: float) -> dict[str, Any]:
    return {
        "server": server,
        "clients": clients,
        "mbytes_per_s": mbps,
        "jain": jain,
        "latency": {"max": max_s},
        "max_waiting": None,
    }


def test_targets_pass_and_miss() -> None:
    points = [
        _point("haboob-uvloop", 64, 20.0, 0.99, 0.5),
        _point("haboob-uvloop", 1024, 19.0, 0.99, 1.0),
        _point("threads", 1024, 10.0, 0.7, 30.0),
        _point("uvicorn", 1024, 17.0, 0.99, 2.0),
    ]
    [result] = bench.targets(points, 1024)
    assert [c["ok"] for c in result["checks"]] == [True, True, True]
    points[1] = _point("haboob-uvloop", 1024, 17.5, 0.97, 1.0)  # 1.03x uvicorn, Jain too low
    [result] = bench.targets(points, 1024)
    assert [c["ok"] for c in result["checks"]] == [False, False, False]  # 87.5 % of its peak
    # A request still waiting at the end counts towards threads' max response time.
    points[2]["max_waiting"] = 40.0
    assert bench.effective_max(points[2]) == 40.0
