"""Where the submit-to-done time of one task on an idle worker goes, stage by stage.

Run from the repository root::

    .venv/bin/python -m bench.latency_stages [--n 500] [--poll-ms 1] [--json out.json]

One ``stockq worker --concurrency 1`` (its supervisor timed at each step:
bench/_stages_worker.py) against a private ``redis-server``; ``--n`` no-op tasks are
submitted one at a time, each once the previous one is counted completed (the
``completed`` counter polled every ``--poll-ms``, as the peer harness does; 0: without
sleeping).  Prints the percentiles and a histogram of submit → counted done, then of
each stage: submit → the doorbell's answer in the supervisor, → the claim's answer, →
sent to the child, → the child's result read, → the attempt recorded (the counter is
bumped inside that last call, so its Redis part is split between "recorded" and the
poll), and the supervisor's garbage-collector pauses meanwhile."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from app.local_redis import LocalRedis
from app.models import TaskSpec
from app.producer import Producer
from app.settings import Settings
from bench._pool import worker_env
from bench._procfs import pct

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("submitted", "rung", "claimed", "sent", "result", "recorded")


def histogram(values_ms: list[float], width: float = 0.25) -> str:
    counts: dict[float, int] = {}
    for v in values_ms:
        edge = int(v / width) * width
        counts[edge] = counts.get(edge, 0) + 1
    return "  ".join(f"{edge:.2f}–{edge + width:.2f}: {n}" for edge, n in sorted(counts.items()))


def line(name: str, values_ms: list[float]) -> str:
    if not values_ms:
        return f"{name:<28} (none)"
    return (f"{name:<28} p50 {pct(values_ms, 0.5):6.3f}  p90 {pct(values_ms, 0.9):6.3f}  "
            f"p99 {pct(values_ms, 0.99):6.3f}  max {max(values_ms):6.3f} ms")


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="stockq-stages-"))
    with LocalRedis() as server:
        env = worker_env(server.url, "warning", work,
                         STOCKQ_PLUGINS="plugins_bridge.examples:EXAMPLES")
        out = work / "stages.json"
        worker = subprocess.Popen([sys.executable, "-m", "bench._stages_worker", str(out)],
                                  env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        producer = Producer(Settings(redis_url=server.url))
        stats = producer.keys.stats
        reader = redis.Redis.from_url(server.url)
        submitted: list[float] = []
        totals: list[float] = []
        poll = args.poll_ms / 1000

        def done() -> int:
            return int(reader.hget(stats, "completed") or 0)  # type: ignore[arg-type]

        try:
            for i in range(args.warm + args.n):
                target = done() + 1
                t0 = time.perf_counter()
                producer.enqueue(TaskSpec.build("noop", params={"stage": i}))
                deadline = t0 + 30
                while done() < target:
                    if time.perf_counter() > deadline:
                        raise SystemExit("a task was not done within 30 s")
                    if poll:
                        time.sleep(poll)
                if i >= args.warm:
                    submitted.append(t0)
                    totals.append((time.perf_counter() - t0) * 1000)
            worker.send_signal(signal.SIGUSR1)
            worker.wait(30)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
            producer.close()
            reader.close()
        raw = json.loads(out.read_text())
    records = [r for r in raw["records"] if all(s in r for s in STAGES[1:])][-args.n:]
    for r, t0 in zip(records, submitted[-len(records):], strict=False):
        r["submitted"] = t0
    stages = {f"{a} → {b}": [(r[b] - r[a]) * 1000 for r in records]
              for a, b in zip(STAGES, STAGES[1:], strict=False)}
    gc_pauses = [(gen, s * 1000) for gen, s in raw["gc"]]
    return {"totals": totals, "stages": stages, "gc": gc_pauses}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    ap.add_argument("--n", type=int, default=500, help="tasks measured")
    ap.add_argument("--warm", type=int, default=20, help="tasks before the measured ones")
    ap.add_argument("--poll-ms", type=float, default=1.0,
                    help="how often the completed counter is read (0: without sleeping)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    result = run(args)
    print(f"{args.n} no-op tasks, one at a time, `stockq worker --concurrency 1`, "
          f"polled every {args.poll_ms:g} ms\n")
    print(line("submit → counted done", result["totals"]))
    print(f"  histogram (ms): {histogram(result['totals'])}\n")
    for name, values in result["stages"].items():
        print(line(name, values))
    pauses = result["gc"]
    print(f"\nsupervisor GC pauses meanwhile: {len(pauses)}, longest "
          f"{max((p for _, p in pauses), default=0):.3f} ms "
          f"(generations {sorted({g for g, _ in pauses})})")
    if args.json is not None:
        args.json.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
