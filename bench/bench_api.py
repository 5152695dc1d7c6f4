"""HTTP sidecar benchmark: one real ``stockq api`` process against its own Redis.

Run from the repository root::

    .venv/bin/python -m bench.bench_api [--duration 5] [--concurrency 16] [--json out.json]

It starts a redis-server on a free loopback port (never 6379) and ONE
``python -m app.cli api --port <free port>`` subprocess (plugins
``plugins_bridge.examples:EXAMPLES``, JSON logs at level info to a file, as in
production), waits until it answers, then drives it with keep-alive HTTP clients:
client processes (``python -m bench.bench_api --client-worker``), each one asyncio
loop with an ``aiohttp.ClientSession`` whose connector is limited to its share of
``--concurrency`` connections, one coroutine per connection, each sending its next
request as soon as the previous one answered (closed loop).

1. submit: ``POST /api/v1/tasks`` of the ``noop`` plugin with distinct params (no
   dedup; every answer must be 202 with ``created: true``);
2. status: ``GET /api/v1/tasks/{id}`` of tasks queued by the submit runs.

Each scenario runs once per entry of ``--client-procs`` (default ``1,2``): the same
total number of connections from one client process, then split over two, so the
reader can see whether one Python client saturates before the server.  A run is a
warm-up (``--warmup`` s, not counted) then ``--duration`` s measured; latency is per
request as the client sees it (send to body read), requests/s is the requests started
in the window divided by the time until the last of them completed.  ``srv conns`` is
the ESTABLISHED sockets on the sidecar's port mid-window, ``reconn`` the connections
the clients opened after their first ones (0: every request went over keep-alive).  CPU over the
window comes from /proc (Linux): the sidecar, redis-server, each client process and
the whole machine (so other load is visible); ``us/req`` is CPU per request.  A
process near 100 % of one CPU is saturated (the sidecar and the clients are one
thread each); the machine near 100 % of all its CPUs means they compete for CPUs.

Budgets (PASS/MISS at the end) are judged on the client configuration that got the
highest rate for the scenario: >= 2,000 submits/s, >= 4,000 status reads/s, p99 under
20 ms for both.  ``wrk``, when installed, adds a cross-check of the status read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench._api_client import SUBMIT_PATH, ClientProc, client_worker_main, established
from bench._procfs import cpu_seconds, machine_busy, pct, run_and_report, status_kb

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = "plugins_bridge.examples:EXAMPLES"
READY_PATH = "/api/v1/plugins"

BUDGET_SUBMIT = 2_000.0  # requests/s
BUDGET_STATUS = 4_000.0  # requests/s
BUDGET_P99_MS = 20.0


# ================================================================ results


@dataclass
class Run:
    scenario: str
    client_procs: int
    connections: int
    requests: int
    seconds: float
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    cpu_api: float  # CPU s over the window
    cpu_redis: float
    cpu_clients: list[float]
    cpu_machine: float
    window_s: float
    server_conns: int
    reconnects: int  # connections the clients opened after the first conc ones

    def util(self, cpu: float) -> float:
        return cpu / self.window_s * 100

    def us_per_req(self, cpu: float) -> float:
        return cpu / max(self.requests, 1) * 1e6


@dataclass
class Results:
    machine: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    budgets: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# ================================================================ the sidecar


def sidecar_env(redis_url: str, log_level: str) -> dict[str, str]:
    from app.environment import PROXY_ENVIRONMENT

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STOCKQ_") and k not in PROXY_ENVIRONMENT
           and k.lower() != "no_proxy"}
    env.update(STOCKQ_REDIS_URL=redis_url, STOCKQ_PLUGINS=PLUGINS, STOCKQ_LOG_FORMAT="json",
               STOCKQ_LOG_LEVEL=log_level, PYTHONPATH=str(ROOT))
    return env


class Sidecar:
    """``python -m app.cli api --port P``, stdout and stderr (its JSON log) to a file."""

    def __init__(self, redis_url: str, port: int, log_path: Path, log_level: str) -> None:
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "ab")  # closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "api", "--port", str(port)],
            env=sidecar_env(redis_url, log_level), cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds until ``GET /api/v1/plugins`` answered 200."""
        import aiohttp

        t0 = time.monotonic()
        async with aiohttp.ClientSession() as s:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the sidecar exited with {self.proc.returncode}:\n{self.tail()}")
                try:
                    async with s.get(self.base_url + READY_PATH) as r:
                        await r.read()
                        if r.status == 200:
                            return time.monotonic() - t0
                except aiohttp.ClientError:
                    pass
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"the sidecar did not answer within {timeout} s:\n"
                                       f"{self.tail()}")
                await asyncio.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_stats(self) -> dict[str, Any]:
        lines = errors = 0
        events: dict[str, int] = {}
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                lines += 1
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                ev = str(rec.get("event"))
                events[ev] = events.get(ev, 0) + 1
                errors += rec.get("level") in ("error", "critical")
        return {"bytes": self.log_path.stat().st_size, "lines": lines,
                "error_lines": errors, "events": events}


# ================================================================ one run


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.time()))


async def one_run(args: argparse.Namespace, api: Sidecar, redis_pid: int, scenario: str,
                  procs: int, ids: list[str], seed: int) -> tuple[Run, list[str]]:
    shares = [args.concurrency // procs + (i < args.concurrency % procs) for i in range(procs)]
    clients = []
    try:
        for i, conc in enumerate(shares):
            spec = {"base_url": api.base_url, "concurrency": conc, "kind": scenario,
                    "seed": seed + i * 10_000_000, "tag": f"{scenario}{procs}-{i}"}
            if scenario == "status":
                spec["ids"] = ids[i::procs] or ids
            clients.append(await ClientProc.start(spec))
        for c in clients:
            if (await c.line()).strip() != b"ready":
                raise RuntimeError("a client process did not get ready")
        start_at = time.time() + args.warmup
        window = {"start_at": start_at, "end_at": start_at + args.duration}
        for c in clients:
            await c.go(window)
        await sleep_until(start_at)
        pids = [c.proc.pid for c in clients]
        a = (cpu_seconds(api.proc.pid), cpu_seconds(redis_pid),
             [cpu_seconds(p) for p in pids], machine_busy(), time.monotonic())
        await sleep_until(start_at + args.duration / 2)
        conns = established(api.port)
        await sleep_until(window["end_at"])
        z = (cpu_seconds(api.proc.pid), cpu_seconds(redis_pid),
             [cpu_seconds(p) for p in pids], machine_busy(), time.monotonic())
        outs = [json.loads(await c.line()) for c in clients]
        for c in clients:
            await c.proc.wait()
    finally:
        for c in clients:
            c.kill()
    lat = [x for o in outs for x in o["latencies_ms"]]
    errors: dict[str, int] = {}
    for o in outs:
        for k, v in o["errors"].items():
            errors[k] = errors.get(k, 0) + v
    n = sum(o["requests"] for o in outs)
    secs = max(o["seconds"] for o in outs)
    run = Run(scenario, procs, args.concurrency, n, secs, n / secs,
              statistics.median(lat) if lat else float("nan"), pct(lat, 0.90),
              pct(lat, 0.99), max(lat, default=float("nan")), errors,
              z[0] - a[0], z[1] - a[1], [q - p for p, q in zip(a[2], z[2], strict=True)],
              z[3] - a[3], z[4] - a[4], conns, sum(o["reconnects"] for o in outs))
    return run, [i for o in outs for i in o["ids"]]


# ================================================================ wrk cross-check


def wrk_check(args: argparse.Namespace, api: Sidecar, ids: list[str], log_dir: Path) -> str:
    """``wrk`` GETs of one existing task (it cannot vary the path without a script)."""
    exe = shutil.which("wrk")
    if exe is None:
        return "wrk not installed: skipped"
    script = log_dir / "ids.lua"
    sample = random.sample(ids, min(len(ids), 2000))
    script.write_text("local ids = {" + ",".join(f'"{i}"' for i in sample) + "}\n"
                      "local n = 0\nrequest = function()\n  n = n + 1\n"
                      f'  return wrk.format("GET", "{SUBMIT_PATH}/" .. ids[n % #ids + 1])\n'
                      "end\n")
    out = subprocess.run([exe, "-t", "2", "-c", str(args.concurrency), "-d",
                          f"{max(2, int(args.duration))}s", "--latency", "-s", str(script),
                          api.base_url], capture_output=True, text=True, timeout=60)
    keep = [ln.strip() for ln in out.stdout.splitlines()
            if ln.strip().startswith(("Requests/sec", "50%", "99%", "Non-2xx"))]
    return "; ".join(keep) or out.stdout.strip()[-300:]


# ================================================================ report


def verdict(r: Run, cpus: int) -> str:
    api = r.util(r.cpu_api)
    machine = r.util(r.cpu_machine) / cpus
    clients = [r.util(c) for c in r.cpu_clients]
    other = max(0.0, r.util(r.cpu_machine - r.cpu_api - r.cpu_redis - sum(r.cpu_clients)))
    busy = f"; other processes took {other:.0f}% of a CPU" if other >= 10 else ""
    if api >= 90:
        return f"sidecar saturated ({api:.0f}% of one CPU, single event loop){busy}"
    if max(clients, default=0.0) >= 90:
        return f"a client process saturated ({max(clients):.0f}% of one CPU){busy}"
    if machine >= 85:
        return (f"machine CPU-bound ({machine:.0f}% of {cpus} CPUs: sidecar {api:.0f}%, "
                f"clients {sum(clients):.0f}%){busy}")
    return f"nothing saturated (sidecar {api:.0f}%, machine {machine:.0f}% of {cpus} CPUs){busy}"


def budgets(res: Results) -> None:
    for scenario, floor in (("submit", BUDGET_SUBMIT), ("status", BUDGET_STATUS)):
        runs = [r for r in res.runs if r.scenario == scenario]
        if not runs:
            continue
        best = max(runs, key=lambda r: r.rate)
        where = f"({best.client_procs} client proc, {best.connections} conns)"
        for name, value, budget, higher, unit in (
            (f"{scenario} requests/s {where}", best.rate, floor, True, "/s"),
            (f"{scenario} p99 latency {where}", best.p99_ms, BUDGET_P99_MS, False, "ms"),
        ):
            ok = not best.errors and (value >= budget if higher else value < budget)
            res.budgets.append({"name": name, "value": value, "budget": budget, "unit": unit,
                                "direction": ">=" if higher else "<",
                                "result": "PASS" if ok else "MISS"})


def print_report(res: Results) -> None:
    print("== machine")
    for k, v in res.machine.items():
        print(f"  {k:<18} {v}")
    print("== parameters")
    print("  " + ", ".join(f"{k}={v}" for k, v in res.params.items()))
    print("\n== throughput and latency (client side)")
    print(f"  {'scenario':<8} {'procs':>5} {'conns':>5} {'srv conns':>9} {'requests':>8} "
          f"{'secs':>6} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'reconn':>6}  errors")
    for r in res.runs:
        errs = ", ".join(f"{k}: {v}" for k, v in r.errors.items()) or "none"
        print(f"  {r.scenario:<8} {r.client_procs:>5} {r.connections:>5} {r.server_conns:>9} "
              f"{r.requests:>8} {r.seconds:6.2f} {r.rate:7,.0f} {r.p50_ms:7.2f} "
              f"{r.p90_ms:7.2f} {r.p99_ms:7.2f} {r.max_ms:7.1f} {r.reconnects:>6}  {errs}")
    cpus = res.info.get("cpus", os.cpu_count() or 1)
    print(f"\n== CPU over the window (% of one CPU; machine: % of all {cpus}) "
          "and CPU us per request")
    print(f"  {'scenario':<8} {'procs':>5} {'sidecar':>8} {'redis':>6} {'clients':>15} "
          f"{'machine':>8} | {'sidecar':>7} {'redis':>6} {'clients':>7} {'other':>6} us/req"
          "  bottleneck")
    for r in res.runs:
        cl = "+".join(f"{r.util(c):.0f}" for c in r.cpu_clients)
        other = r.cpu_machine - r.cpu_api - r.cpu_redis - sum(r.cpu_clients)
        print(f"  {r.scenario:<8} {r.client_procs:>5} {r.util(r.cpu_api):7.0f}% "
              f"{r.util(r.cpu_redis):5.0f}% {cl + '%':>15} {r.util(r.cpu_machine) / cpus:7.0f}% "
              f"| {r.us_per_req(r.cpu_api):7.0f} {r.us_per_req(r.cpu_redis):6.0f} "
              f"{r.us_per_req(sum(r.cpu_clients)):7.0f} {r.us_per_req(max(other, 0)):6.0f}"
              f"         {verdict(r, cpus)}")
    print("\n== other")
    for k, v in res.info.items():
        if k != "cpus":
            print(f"  {k:<22} {v}")
    if res.problems:
        print("\n== problems")
        for p in res.problems:
            print(f"  - {p}")
    print("\n== budgets")
    for b in res.budgets:
        print(f"  {b['result']:<4}  {b['name']:<50} {b['value']:9,.2f} {b['direction']} "
              f"{b['budget']:,g} {b['unit']}")


# ================================================================ main


def machine_info(redis_info: dict[str, Any], redis_port: int, api: Sidecar) -> dict[str, Any]:
    import aiohttp
    import redis

    from bench._measure import code_version

    return {
        "cpu_count": f"{os.cpu_count()} (usable {len(os.sched_getaffinity(0))})",
        "platform": platform.platform(),
        "python": sys.version.split()[0] + f" ({platform.python_implementation()}, "
                  f"{sys.executable})",
        "aiohttp": aiohttp.__version__,
        "redis-py": redis.__version__,
        "redis-server": f"{redis_info['redis_version']} (port {redis_port})",
        "code": code_version(),
        "sidecar": f"pid {api.proc.pid}, {api.base_url}, JSON logs to {api.log_path}",
        "loadavg at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "note": "sidecar, redis-server and clients share the machine's CPUs; loopback TCP",
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bench_api", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", "-c", type=int, default=16,
                   help="keep-alive connections in total (split over the client processes)")
    p.add_argument("--client-procs", default="1,2",
                   help="client process counts to run each scenario with (default 1,2)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per run")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                   help="STOCKQ_LOG_LEVEL of the sidecar (default info, as in production)")
    p.add_argument("--keep-logs", metavar="DIR", help="write the sidecar log here and keep it")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--client-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


async def scenarios(args: argparse.Namespace, api: Sidecar, redis_pid: int,
                    res: Results) -> list[str]:
    procs_list = [int(x) for x in args.client_procs.split(",") if x.strip()]
    ids: list[str] = []
    for n, procs in enumerate(procs_list):
        run, new = await one_run(args, api, redis_pid, "submit", procs, [],
                                 seed=(n + 1) * 100_000_000)
        res.runs.append(run)
        ids += new
    if not ids:
        raise RuntimeError("the submit runs queued no task")
    for procs in procs_list:
        run, _ = await one_run(args, api, redis_pid, "status", procs, ids, seed=0)
        res.runs.append(run)
    return ids


async def run(args: argparse.Namespace) -> Results:
    from app.keys import Keys
    from app.local_redis import free_port
    from app.redis_client import create_client
    from app.settings import Settings
    from bench._redis import BenchRedis

    res = Results(params={k: v for k, v in vars(args).items()
                          if k not in ("json", "client_worker")})
    log_dir = Path(args.keep_logs or tempfile.mkdtemp(prefix="stockq-bench-api-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with BenchRedis() as server:
        assert server.proc is not None
        client = create_client(Settings(redis_url=server.url, plugins=()))
        api = Sidecar(server.url, free_port(), log_dir / "sidecar.log", args.log_level)
        try:
            res.info["sidecar ready after"] = f"{await api.wait_ready():.2f} s"
            res.info["cpus"] = len(os.sched_getaffinity(0))
            res.machine = machine_info(await client.info("server"), server.port, api)
            t0 = time.perf_counter()
            ids = await scenarios(args, api, server.proc.pid, res)
            res.info["bench seconds"] = f"{time.perf_counter() - t0:.1f}"
            res.info["tasks in Redis"] = await client.zcard(Keys().all_index)
            res.info["sidecar RSS"] = f"{status_kb(api.proc.pid, 'VmRSS') / 1024:.1f} MB"
            res.info["wrk cross-check"] = wrk_check(args, api, ids, log_dir)
            res.machine["loadavg at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        except Exception as exc:
            res.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            code = api.stop()
            await client.aclose()
        stats = api.log_stats()
        served = stats["events"].get("api.request", 0)
        res.info["sidecar log"] = (
            f"{stats['lines']:,} lines, {stats['bytes']:,} bytes for {served:,} requests "
            f"(warm-up included: {stats['bytes'] / max(served, 1):.0f} bytes/request), "
            f"{stats['error_lines']} error lines; exit code {code}")
        res.info["log events"] = ", ".join(
            f"{k} {v:,}" for k, v in sorted(stats["events"].items(), key=lambda kv: -kv[1])[:6])
        if not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
    budgets(res)
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_worker:
        return client_worker_main()
    res = run_and_report(run(args), print_report, args.json, lambda res: {
        "machine": res.machine, "params": res.params,
        "runs": [asdict(r) for r in res.runs], "info": res.info,
        "budgets": res.budgets, "problems": res.problems,
    })
    return 1 if res.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
