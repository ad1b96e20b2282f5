#!/usr/bin/env python3
"""The project's two commands, on a fresh clone with only python3 (>= 3.10) and pip.

    python3 dev.py demo     Haboob, the staged web server, under a load spike
    python3 dev.py test     run the whole test suite
    python3 dev.py lint     ruff and mypy --strict on aseda/
    python3 dev.py bench    run the hop benchmark (python3 dev.py bench -- --quick)

Each sets up .venv beside this file the first time (and again when pyproject.toml changes),
installing aseda with its development extras, then runs inside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".aseda-installed"


def ensure_venv() -> None:
    if sys.version_info < (3, 10):
        sys.exit(f"aseda needs Python 3.10 or newer, this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print("dev.py: installing aseda[dev] (first run only)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(wanted)


def run(*args: str) -> int:
    return subprocess.run([str(PYTHON), *args], cwd=ROOT).returncode


def main() -> int:
    command, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("help", [])
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if command not in ("demo", "test", "lint", "bench"):
        print(__doc__)
        return 0 if command == "help" else 2
    ensure_venv()
    if command == "demo":
        return run("examples/haboob/demo.py", *rest)
    if command == "test":
        return run("-m", "pytest", *rest)
    if command == "bench":
        return run("-m", "benchmarks.hop", *rest)
    status = run("-m", "ruff", "check", "aseda", "tests", "examples", "benchmarks")
    status |= run("-m", "ruff", "format", "--check", "aseda")
    status |= run("-m", "mypy", "--strict", "aseda")
    return status


if __name__ == "__main__":
    sys.exit(main())
