"""What a worker's start-up cannot go below: the interpreter and the imports it needs.

Run from the repository root::

    .venv/bin/python -m bench.import_floor [--n 10]

Each line is the shortest of ``--n`` runs of a fresh ``python -c`` in this venv (wall
time, process start to exit; the lines' runs take turns): the bare interpreter,
``asyncio``, redis-py's asyncio client with structlog (what the supervisor talks to
Redis and logs with), and the modules a ``stockq worker`` run imports before its pool
starts (app/entry.py, the worker's parser, app/worker/main.py and the supervisor) —
with their bytecode, as an install has it (the command compiles app/ first, as
ops/bootstrap.sh does and pip does for a wheel), and without it (a copy of app/ with no
``__pycache__`` and PYTHONDONTWRITEBYTECODE set: an editable install where nothing
writes bytecode, which compiles every module at every start).  The peer harness's
"worker start → first job done" of stockq cannot be shorter than the fourth line; the
figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "plugins_bridge")
WORKER = ("from app.cli import build_parser; build_parser(worker_only=True); "
          "import app.worker.main, app.worker.supervisor")
STEPS = [
    ("python (no imports)", "pass", False),
    ("asyncio", "import asyncio", False),
    ("redis.asyncio + structlog", "import redis.asyncio, structlog", False),
    ("a `stockq worker` run's modules", WORKER, False),
    ("the same without their bytecode", WORKER, True),
]


def shortest(runs: list[tuple[str, Path, dict[str, str]]], n: int) -> list[float]:
    """The shortest wall time of each run, the runs taking turns (this VM's speed
    drifts within minutes, so one run's repeats in a row would meet another phase)."""
    best = [float("inf")] * len(runs)
    for _ in range(n):
        for i, (code, cwd, env) in enumerate(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd, env=env)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="runs of each (the shortest counts)")
    args = ap.parse_args(argv)
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    *(str(ROOT / p) for p in PACKAGES)], check=True, stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory(prefix="stockq-import-floor-") as tmp:
        bare = Path(tmp)  # `python -c` puts its working directory first on sys.path
        for p in PACKAGES:
            shutil.copytree(ROOT / p, bare / p, ignore=shutil.ignore_patterns("__pycache__"))
        runs = [(code, bare if copy else ROOT,
                 dict(env, PYTHONDONTWRITEBYTECODE="1") if copy else env)
                for _, code, copy in STEPS]
        print(f"shortest of {args.n} runs each, taking turns, {sys.executable}")
        for (label, _, _), best in zip(STEPS, shortest(runs, args.n), strict=True):
            print(f"  {label:34s} {best * 1000:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
