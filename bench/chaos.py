"""Chaos run: tasks submitted to a real sidecar while workers and Redis are killed.

Run from the repository root::

    .venv/bin/python -m bench.chaos [--tasks 1000] [--workers 3] [--seed 1] [--json out.json]
    .venv/bin/python -m bench.chaos --short        # the CI version (tests/test_chaos_run.py)

It starts, in a temporary directory: a redis-server on a free loopback port (never
6379) with ``appendonly yes`` and ``appendfsync always`` (every acknowledged write is on
disk before the reply, so whatever a restart loses is stockq's fault, not the fsync
window's); a ``stockq api`` sidecar; and ``--workers`` ``stockq worker`` processes
(``--concurrency`` slots each, ``--wait-for-redis``) running the plugins of
bench/chaos_plugins.py.  It submits ``--tasks`` tasks of four kinds (``--mix``: quick,
slow, failing-then-succeeding, timing out) over ``--submit-seconds``, through the
sidecar's HTTP API and every ``--cli-every``-th through ``stockq submit``, retrying a
submission that met a dead Redis.  Meanwhile it SIGKILLs busy worker children and
supervisors (a new worker replaces a killed one), restarts workers (SIGTERM, then a new
one), and restarts Redis once by SIGTERM and once by SIGKILL, at times drawn from
``--seed``.  Then it waits up to ``--deadline`` seconds for every task to end and
prints the verdict (docs/operations.md, "Chaos run").  Exit status: 0 when every bad
column is 0, 1 otherwise, 2 when the run itself broke.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import redis

from app.keys import Keys
from app.local_redis import free_port
from bench._chaos_analysis import (
    BAD,
    EXPECTED,
    FINAL,
    KILL_KINDS,
    Event,
    MarksReader,
    Verdict,
    conclude,
)
from bench._chaos_procs import ROOT, AofRedis, Daemon, kill_pids, stockq_env, wait_dead
from bench._measure import code_version
from bench.chaos_plugins import KINDS

SUBMIT_PATH = "/api/v1/tasks"
FULL = {"tasks": 1000, "submit_seconds": 40.0, "lease": 5.0, "deadline": 90.0,
        "child_kills": 12, "supervisor_kills": 4, "worker_restarts": 3,
        "redis_sigterms": 1, "redis_sigkills": 1}
SHORT = {"tasks": 200, "submit_seconds": 8.0, "lease": 3.0, "deadline": 45.0,
         "child_kills": 1, "supervisor_kills": 1, "worker_restarts": 1,
         "redis_sigterms": 1, "redis_sigkills": 1}


@dataclass
class Planned:
    n: int
    kind: str
    params: dict[str, Any]
    priority: str
    via: str  # http | cli
    task_id: str = ""
    tries: int = 0
    gave_up: str = ""
    deduplicated: bool = False  # a retried submission found the task the first one made


def plan_tasks(args: argparse.Namespace, rng: random.Random, marks: Path) -> list[Planned]:
    weights = {k: float(v) for k, v in (p.split("=") for p in args.mix.split(","))}
    kinds = rng.choices(list(weights), list(weights.values()), k=args.tasks)
    priorities = args.priorities.split(",")
    out = []
    for n, kind in enumerate(kinds):
        params: dict[str, Any] = {"marks": str(marks), "n": n, "seed": args.seed}
        if kind in ("quick", "flaky"):
            params["seconds"] = round(rng.uniform(0.005, 0.05), 3)
        elif kind == "slow":
            params["seconds"] = round(rng.uniform(0.5, 2.5), 3)
        if kind == "flaky":
            params["fail_times"] = 2
        via = "cli" if args.cli_every and n % args.cli_every == args.cli_every - 1 else "http"
        out.append(Planned(n, kind, params, rng.choice(priorities), via))
    return out


def plan_events(args: argparse.Namespace, rng: random.Random) -> list[tuple[float, str]]:
    """(seconds after the first submission, kind): one per slot of equal width over the
    submission window, at a random point of the slot's middle half."""
    counts = dict(zip(KILL_KINDS, (args.child_kills, args.supervisor_kills,
                                   args.worker_restarts, args.redis_sigterms,
                                   args.redis_sigkills), strict=True))
    kinds = [k for k, n in counts.items() for _ in range(n)]
    rng.shuffle(kinds)
    width = (args.submit_seconds + 2.0) / max(1, len(kinds))
    return [(1.0 + width * (i + rng.uniform(0.25, 0.75)), k) for i, k in enumerate(kinds)]


class Chaos:
    """The processes of one run and the kills."""

    def __init__(self, args: argparse.Namespace, run_dir: Path) -> None:
        self.args = args
        self.dir = run_dir
        self.marks_dir = run_dir / "marks"
        (self.marks_dir / "locks").mkdir(parents=True)
        self.marks = MarksReader(self.marks_dir)
        self.rng = random.Random(args.seed * 7919 + 1)  # victims
        self.redis = AofRedis(run_dir / "redis", args.appendfsync)
        self.workers: list[Daemon] = []
        self.sidecar: Daemon | None = None
        self.events: list[Event] = []
        self.kinds: dict[str, str] = {}  # task id -> kind, as submissions are answered
        self.env: dict[str, str] = {}

    # ------------------------------------------------------------------ processes
    def start(self) -> None:
        self.redis.start()
        self.env = stockq_env(
            self.redis.url, self.dir / "data",
            STOCKQ_LEASE_SECONDS=f"{self.args.lease:g}",
            STOCKQ_RETRY_BASE_SECONDS=f"{self.args.retry_base:g}",
            STOCKQ_RETRY_MAX_SECONDS=f"{self.args.retry_max:g}")
        port = free_port()
        self.sidecar = Daemon("sidecar", self.env, self.dir / "sidecar.log",
                              "api", "--port", str(port))
        self.sidecar_url = f"http://127.0.0.1:{port}"
        for _ in range(self.args.workers):
            self.start_worker()
        self.sidecar.wait_ready("api.started")
        for w in self.workers:
            w.wait_ready("worker.started")

    def start_worker(self) -> Daemon:
        w = Daemon(f"worker{len(self.workers)}", self.env,
                   self.dir / f"worker{len(self.workers)}.log", "worker",
                   "--concurrency", str(self.args.concurrency), "--wait-for-redis",
                   "--shutdown-grace", f"{self.args.shutdown_grace:g}")
        self.workers.append(w)
        return w

    def live_workers(self) -> list[Daemon]:
        return [w for w in self.workers if w.alive and w.check_ready("worker.started")]

    def stop_all(self) -> None:
        for w in self.workers:
            if w.alive:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            w.stop()
        if self.sidecar is not None:
            self.sidecar.stop()

    def cleanup(self) -> None:
        for d in [*self.workers, *([self.sidecar] if self.sidecar else [])]:
            d.kill()
        self.redis.cleanup()

    # ------------------------------------------------------------------ kills
    def pick(self, wait: float = 3.0) -> tuple[Daemon, int]:
        """A worker and a child of it that runs a task (a slow or timing-out one if
        any), waiting up to ``wait`` s for one; then any worker and child."""
        deadline = time.monotonic() + wait
        while True:
            self.marks.poll()
            children = [(w, pid) for w in self.live_workers() for pid in w.children()]
            busy = [(w, pid, run) for w, pid in children
                    if (run := self.marks.busy(pid)) is not None]
            long = [(w, pid) for w, pid, run in busy
                    if self.kinds.get(run.task_id) in ("slow", "timeout")]
            late = time.monotonic() > deadline
            if long or (busy and late):
                return self.rng.choice(long or [(w, pid) for w, pid, _ in busy])
            if children and late:
                return self.rng.choice(children)
            if time.monotonic() > deadline + 60:
                raise RuntimeError("no live worker with a child to kill for 60 s")
            time.sleep(0.05)

    def perform(self, kind: str) -> Event:
        if kind.startswith("redis"):
            sig = signal.SIGTERM if kind == "redis_sigterm" else signal.SIGKILL
            at = self.redis.stop(sig)
            time.sleep(self.args.redis_down)
            return Event(kind, at, f"redis-server port {self.redis.port}",
                         back_at=self.redis.start())
        w, pid = self.pick()
        if kind == "child_sigkill":
            at = time.time()
            os.kill(pid, signal.SIGKILL)
            return Event(kind, at, f"child {pid} of {w.name} (pid {w.pid})", [pid])
        kids = w.pool_processes()
        if kind == "supervisor_sigkill":
            at = w.kill()
            orphans = wait_dead(kids, 5.0)
            kill_pids(orphans)
            self.start_worker()
            return Event(kind, at, f"{w.name} (pid {w.pid})", kids, orphans=orphans)
        at = w.stop()  # worker_restart: SIGTERM, drain within the grace, exit
        self.start_worker()
        return Event(kind, at, f"{w.name} (pid {w.pid})", kids,
                     note=f"exit code {w.proc.returncode}")

    async def run_events(self, plan: list[tuple[float, str]], t0: float) -> None:
        for offset, kind in plan:
            await asyncio.sleep(max(0.0, t0 + offset - time.monotonic()))
            self.events.append(await asyncio.to_thread(self.perform, kind))

    # ------------------------------------------------------------------ submissions
    async def submit_http(self, session: aiohttp.ClientSession, p: Planned) -> str | None:
        body = {"plugin_name": KINDS[p.kind].name, "params": p.params, "priority": p.priority}
        try:
            async with session.post(SUBMIT_PATH, json=body) as r:
                data = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        if r.status == 202:
            p.deduplicated = p.tries > 1 and not data.get("created")
            return str(data["task_id"])
        if r.status < 500:
            p.gave_up = f"HTTP {r.status}: {data}"
        return None

    async def submit_cli(self, p: Planned) -> str | None:
        cmd = [sys.executable, "-m", "app.cli", "submit", KINDS[p.kind].name,
               "--priority", p.priority, "--json"]
        for k, v in p.params.items():
            cmd += ["--param-json", f"{k}={json.dumps(v)}"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=self.env, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode == 0:
            data = json.loads(out)
            p.deduplicated = p.tries > 1 and not data.get("created")
            return str(data["task_id"])
        if proc.returncode != 3:  # 3: Redis unavailable, worth another try
            p.gave_up = f"stockq submit exited {proc.returncode}: {err.decode()[-300:]}"
        return None

    async def submit(self, session: aiohttp.ClientSession, p: Planned) -> None:
        deadline = time.monotonic() + self.args.submit_patience
        while True:
            p.tries += 1
            tid = await (self.submit_cli(p) if p.via == "cli" else self.submit_http(session, p))
            if tid:
                p.task_id = tid
                self.kinds[tid] = p.kind
                return
            if p.gave_up:
                return
            if time.monotonic() > deadline:
                p.gave_up = f"not accepted within {self.args.submit_patience:g} s"
                return
            await asyncio.sleep(0.2)

    async def submit_all(self, planned: list[Planned], t0: float) -> None:
        interval = self.args.submit_seconds / max(1, len(planned))
        todo = iter(planned)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(base_url=self.sidecar_url, timeout=timeout) as s:

            async def client() -> None:
                for p in todo:  # one iterator shared by the clients
                    await asyncio.sleep(max(0.0, t0 + p.n * interval - time.monotonic()))
                    await self.submit(s, p)

            await asyncio.gather(*(client() for _ in range(self.args.clients)))

    # ------------------------------------------------------------------ the end
    def wait_final(self, ids: list[str], timeout: float) -> float:
        """Wait until every task has ended (at most ``timeout`` s); returns the wait."""
        r = redis.Redis(port=self.redis.port, decode_responses=True)
        keys, t0 = Keys(), time.monotonic()
        try:
            while time.monotonic() - t0 < timeout:
                try:
                    pipe = r.pipeline(transaction=False)
                    for tid in ids:
                        pipe.hget(keys.task(tid), "status")
                    if all(s in FINAL for s in pipe.execute()):
                        break
                except redis.RedisError:
                    pass
                time.sleep(0.25)
        finally:
            r.close()
        return time.monotonic() - t0

    def collect(self, planned: list[Planned]) -> Verdict:
        """Read the tasks' hashes, the audit outbox, the worker logs and the marks."""
        keys = Keys()
        r = redis.Redis(port=self.redis.port, decode_responses=True)
        try:
            pipe = r.pipeline(transaction=False)
            for plugin in KINDS.values():
                pipe.zrange(keys.plugin_index(plugin.name), 0, -1)
            pipe.lrange(keys.audit_tasks, 0, -1)
            pipe.zrange(keys.leases, 0, -1)
            pipe.smembers(keys.running)
            *indexes, raw_rows, leases, running = pipe.execute()
            tasks = {p.task_id: p.kind for p in planned if p.task_id}
            unacknowledged = []
            for kind, ids in zip(KINDS, indexes, strict=True):
                for tid in ids:
                    if tid not in tasks:
                        tasks[tid] = kind
                        unacknowledged.append(tid)
            pipe = r.pipeline(transaction=False)
            for tid in tasks:
                pipe.hgetall(keys.task(tid))
            final = dict(zip(tasks, pipe.execute(), strict=True))
        finally:
            r.close()
        rows = [json.loads(x) for x in raw_rows]
        leftovers = {keys.leases: list(leases), keys.running: sorted(running)}
        completed_rows = Counter(str(row[0]) for row in rows if row[5] == "completed")
        completed_logged: Counter[str] = Counter()
        for w in self.workers:
            completed_logged.update(str(e.get("task_id")) for e in w.events("task.completed"))
        self.marks.poll()
        never = [f"#{p.n} ({p.kind}, {p.via}): {p.gave_up}" for p in planned if not p.task_id]
        v = conclude(tasks, final, list(self.marks.runs.values()), self.events,
                     completed_logged, completed_rows, leftovers, never, unacknowledged)
        v.info["submissions_retried"] = sum(1 for p in planned if p.tries > 1)
        v.info["retried_submissions_answered_by_dedup"] = sum(p.deduplicated for p in planned)
        v.info["submitted_through_cli"] = sum(1 for p in planned if p.via == "cli")
        v.info["audit_rows"] = dict(Counter(f"{row[5]}/{row[6]}" if row[6] else row[5]
                                            for row in rows))
        v.info["worker_events"] = {
            name: sum(len(w.events(name)) for w in self.workers)
            for name in ("task.worker_lost", "task.lease_lost", "worker.child_died",
                         "task.requeued", "task.timeout", "worker.killed",
                         "worker.redis_unavailable", "task.settle_failed", "worker.slot_error")}
        return v


# ---------------------------------------------------------------- report

ROWS = (("submitted", "submitted", None), ("completed", "completed", None),
        ("failed_as_designed", "failed as designed", None),
        ("never_accepted", "never accepted", 0), ("lost", "lost", 0),
        ("completed_twice", "completed twice", 0),
        ("ran_twice_at_once", "ran twice at the same time", 0),
        ("stuck_running", "stuck running", 0),
        ("not_as_designed", "ended otherwise than designed", 0),
        ("orphaned_children", "children outliving their supervisor", 0))


def expected_counts(per_kind: dict[str, dict[str, int]]) -> dict[str, int]:
    return {"submitted": sum(k["submitted"] for k in per_kind.values()),
            "completed": sum(v["submitted"] for k, v in per_kind.items()
                             if EXPECTED[k] == "completed"),
            "failed_as_designed": sum(v["submitted"] for k, v in per_kind.items()
                                      if EXPECTED[k] == "failed")}


def print_report(result: dict[str, Any]) -> None:
    cols, per_kind = result["columns"], result["per_kind"]
    expect = expected_counts(per_kind)
    print(f"\n== chaos run: {result['params']['tasks']:,} tasks ("
          + ", ".join(f"{k} {v['submitted']}" for k, v in per_kind.items())
          + f"), {result['params']['workers']} workers x {result['params']['concurrency']} "
          f"slots, seed {result['params']['seed']}, {result['seconds']:.0f} s")
    print("   kills: " + ", ".join(f"{k} {v}" for k, v in result["info"]["kills"].items()))
    print("\n| column | value | expected |\n|---|---|---|")
    for key, label, bad in ROWS:
        want = bad if bad is not None else expect.get(key, "")
        print(f"| {label} | {cols[key]:,} | {want} |")
    longest = cols["longest_recovery_s"]
    print("| longest recovery | "
          + (f"{longest:.2f} s ({cols['longest_recovery_kind']})" if longest is not None
             else "n/a") + " | (see below) |")
    print("\n== recovery by kill kind (median / max s; what is measured)")
    for kind in KILL_KINDS:
        recs = [r for r in result["recoveries"] if r["kind"] == kind]
        vals = [r["recovery_s"] for r in recs if r["recovery_s"] is not None]
        hit = sum(len(r["affected"]) for r in recs)
        extra = (f"; Redis answered again after max "
                 f"{max(r['down_s'] for r in recs):.2f} s" if kind.startswith("redis")
                 and recs else f"; runs it ended: {hit}")
        text = f"{statistics.median(vals):.2f} / {max(vals):.2f}" if vals else "n/a"
        print(f"  {kind:<19} {len(recs):>3} kills  {text:>13}  "
              f"({recs[0]['recovery_is'] if recs else '-'}{extra})")
    print("\n== events")
    for r in result["recoveries"]:
        worst = max((a for a in r["affected"] if a["seconds"] is not None),
                    key=lambda a: a["seconds"], default=None)
        rec = "n/a" if r["recovery_s"] is None else (
            f"{r['recovery_s']:.2f} s" + (f" ({worst['how']})" if worst else ""))
        print(f"  +{r['at'] - result['started_at']:6.1f} s  {r['kind']:<19} {r['victim']}; "
              f"runs ended {len(r['affected'])}; recovery {rec}"
              + (f"; orphans {r['orphans']}" if r["orphans"] else "")
              + (f"; {r['note']}" if r["note"] else ""))
    print("\n== info")
    for k, v in result["info"].items():
        if k != "kills":
            print(f"  {k}: {v}")
    offending = {k: v for k, v in result["offenders"].items() if v}
    for k, items in offending.items():
        print(f"\n== {k} (first {len(items)})")
        for item in items:
            print(f"  {item}")
    print(f"\n{'PASS' if result['ok'] else 'FAIL'}: "
          + ("every bad column is 0" if result["ok"] else
             "non-zero: " + ", ".join(f"{k} {cols[k]}" for k in BAD if cols[k])))


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true",
                   help="the CI version: 200 tasks, one kill of each kind, lease 3 s")
    p.add_argument("--tasks", type=int, help="tasks submitted (full 1000, short 200)")
    p.add_argument("--workers", type=int, default=3, help="stockq worker processes")
    p.add_argument("--concurrency", type=int, default=2, help="slots per worker")
    p.add_argument("--seed", type=int, default=1, help="task mix, parameters, kill times")
    p.add_argument("--mix", default="quick=70,slow=15,flaky=10,timeout=5",
                   help="weights of the kinds of task")
    p.add_argument("--priorities", default="normal",
                   help="priorities drawn for the tasks, e.g. high,normal,low (a task a "
                        "kill sent back then waits behind higher ones: longer recoveries)")
    p.add_argument("--submit-seconds", type=float, help="submissions spread over this")
    p.add_argument("--clients", type=int, default=4, help="concurrent HTTP submitters")
    p.add_argument("--cli-every", type=int, default=25,
                   help="every Nth task goes through `stockq submit` (0: none)")
    p.add_argument("--submit-patience", type=float, default=60.0,
                   help="seconds a submission is retried before it counts as never accepted")
    for name, what in (("child-kills", "SIGKILLs of a busy worker child"),
                       ("supervisor-kills", "SIGKILLs of a supervisor (a new worker "
                                            "replaces it)"),
                       ("worker-restarts", "SIGTERM of a worker, then a new one"),
                       ("redis-sigterms", "Redis restarts after SIGTERM"),
                       ("redis-sigkills", "Redis restarts after SIGKILL")):
        p.add_argument(f"--{name}", type=int, help=f"{what} (full/short: "
                       f"{FULL[name.replace('-', '_')]}/{SHORT[name.replace('-', '_')]})")
    p.add_argument("--lease", type=float, help="STOCKQ_LEASE_SECONDS (full 5, short 3)")
    p.add_argument("--retry-base", type=float, default=0.2, help="STOCKQ_RETRY_BASE_SECONDS")
    p.add_argument("--retry-max", type=float, default=1.0, help="STOCKQ_RETRY_MAX_SECONDS")
    p.add_argument("--shutdown-grace", type=float, default=1.0,
                   help="stockq worker --shutdown-grace (a restart requeues longer tasks)")
    p.add_argument("--redis-down", type=float, default=0.5,
                   help="seconds Redis stays down at a restart; with its restart it must "
                        "stay below the lease minus two renewal intervals (min(2 s, "
                        "lease/3) each), or running tasks may be reaped and run again")
    p.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    p.add_argument("--deadline", type=float,
                   help="seconds after the last submission and kill for every task to end "
                        "(full 90, short 45)")
    p.add_argument("--keep", metavar="DIR", help="keep the logs and marks here (a failed "
                                                 "run keeps them in its temporary directory)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON here")
    args = p.parse_args(argv)
    for key, value in (SHORT if args.short else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.workers < 1 or args.concurrency < 1 or args.tasks < 1:
        p.error("--tasks, --workers and --concurrency must be at least 1")
    return args


def machine(chaos: Chaos) -> dict[str, Any]:
    info = cast(dict[str, Any], redis.Redis(port=chaos.redis.port).info("server"))
    return {"cpus": f"{os.cpu_count()} (usable {len(os.sched_getaffinity(0))})",
            "platform": platform.platform(), "python": sys.version.split()[0],
            "redis-server": str(info["redis_version"]), "code": code_version(),
            "loadavg at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


async def _drive(chaos: Chaos, planned: list[Planned], events: list[tuple[float, str]]) -> None:
    t0 = time.monotonic()
    await asyncio.gather(chaos.submit_all(planned, t0), chaos.run_events(events, t0))


def run(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    chaos = Chaos(args, run_dir)
    planned = plan_tasks(args, rng, chaos.marks_dir)
    events = plan_events(args, rng)
    started = time.time()
    try:
        chaos.start()
        info = machine(chaos)
        started = time.time()
        asyncio.run(_drive(chaos, planned, events))
        waited = chaos.wait_final([p.task_id for p in planned if p.task_id], args.deadline)
        verdict = chaos.collect(planned)
        chaos.stop_all()
    finally:
        chaos.cleanup()
    verdict.info["waited_for_the_end_s"] = round(waited, 2)
    params = {k: v for k, v in vars(args).items() if k not in ("json", "keep")}
    return {"params": params, "machine": info, "started_at": started,
            "seconds": time.time() - started, "ok": verdict.ok, **asdict(verdict),
            "run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="stockq-chaos-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        result = run(args, run_dir)
    except Exception:
        traceback.print_exc()
        print(f"\nthe chaos run broke; logs in {run_dir}", file=sys.stderr)
        return 2
    print_report(result)
    print(f"(total wall time {time.perf_counter() - t0:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"results written to {args.json}")
    if result["ok"] and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    elif not result["ok"]:
        print(f"logs and marks kept in {run_dir}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
