"""What a worker's start-up cannot go below: the interpreter and the imports it needs.

Run from the repository root::

    .venv/bin/python -m bench.import_floor [--n 10]

Each line is the shortest of ``--n`` runs of a fresh ``python -c`` in this venv (wall
time, process start to exit; the lines' runs take turns): the bare interpreter,
``asyncio``, redis-py's asyncio client with structlog (what the supervisor talks to
Redis and logs with), and the
modules a ``stockq worker`` run imports before its pool starts (app/entry.py, the
worker's parser, app/worker/main.py and the supervisor).  The peer harness's "worker
start → first job done" of stockq cannot be shorter than the last line; the figures
are in docs/benchmarks.md.  The bytecode of app/ is compiled first, as an install
compiles it (ops/bootstrap.sh; pip for a wheel).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEPS = [
    ("python (no imports)", "pass"),
    ("asyncio", "import asyncio"),
    ("redis.asyncio + structlog", "import redis.asyncio, structlog"),
    ("a `stockq worker` run's modules",
     "from app.cli import build_parser; build_parser(worker_only=True); "
     "import app.worker.main, app.worker.supervisor"),
]


def shortest(codes: list[str], n: int) -> list[float]:
    """The shortest wall time of each code, the codes taking turns (this VM's speed
    drifts within minutes, so one code's runs in a row would meet another phase)."""
    best = [float("inf")] * len(codes)
    for _ in range(n):
        for i, code in enumerate(codes):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="runs of each (the shortest counts)")
    args = ap.parse_args(argv)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "app"),
                    str(ROOT / "plugins_bridge")], check=True, stdout=subprocess.DEVNULL)
    print(f"shortest of {args.n} runs each, taking turns, {sys.executable}")
    for (label, _), best in zip(STEPS, shortest([code for _, code in STEPS], args.n),
                                strict=True):
        print(f"  {label:34s} {best * 1000:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
