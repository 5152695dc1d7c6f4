"""The load-generating client side of the HTTP sidecar benchmark (bench/bench_api.py).

A client process is ``python -m bench.bench_api --client-worker`` (bench_api's main
hands that option to ``client_worker_main``): it reads a JSON spec on stdin's first
line, opens its connections, prints "ready", waits for a JSON "go" line with the
window (time.time() values), runs, and prints one JSON result line.  ``ClientProc``
starts and drives one such process; ``established`` counts the server's sockets.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUBMIT_PATH = "/api/v1/tasks"


# ================================================================ client worker (own process)


def _submit_body(i: int, tag: str) -> bytes:
    return b'{"plugin_name":"noop","params":{"i":%d,"c":"%s"}}' % (i, tag.encode())


async def _client_run(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    base = spec["base_url"]
    conc = int(spec["concurrency"])
    kind = spec["kind"]
    ids: list[str] = spec.get("ids") or []
    counter = itertools.count(int(spec.get("seed", 0)))
    tag = spec.get("tag", "c")
    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    errors: dict[str, int] = {}
    new_ids: list[str] = []
    last_done = 0.0
    loop = asyncio.get_running_loop()

    def err(what: str) -> None:
        errors[what] = errors.get(what, 0) + 1

    opened = [0]

    async def on_open(*_: Any) -> None:
        opened[0] += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_open)
    connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout,
                                     trace_configs=[trace],
                                     skip_auto_headers=("User-Agent",)) as session:

        async def submit(_: int) -> None:
            async with session.post(SUBMIT_PATH, data=_submit_body(next(counter), tag),
                                    headers=headers) as r:
                raw = await r.read()
            if r.status != 202:
                err(f"http {r.status}")
                return
            body = json.loads(raw)
            if not body.get("created"):
                err("dedup (created=false)")
            new_ids.append(body["task_id"])

        async def status(k: int) -> None:
            async with session.get(f"{SUBMIT_PATH}/{ids[k % len(ids)]}") as r:
                await r.read()
            if r.status != 200:
                err(f"http {r.status}")

        op = submit if kind == "submit" else status
        # open every connection before "ready" (a first request each)
        await asyncio.gather(*(op(random.randrange(1 << 30)) for _ in range(conc)))
        opened_before = opened[0]
        print("ready", flush=True)
        go = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
        start_at, end_at = float(go["start_at"]), float(go["end_at"])

        async def worker(w: int) -> None:
            nonlocal last_done
            k = w * 7919
            while (now := time.time()) < end_at:
                t0 = time.perf_counter()
                try:
                    await op(k)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    err(type(exc).__name__)
                dt = time.perf_counter() - t0
                k += 1
                if now >= start_at:
                    lat.append(dt * 1000)
                    last_done = max(last_done, time.time())

        await asyncio.gather(*(worker(w) for w in range(conc)))
    return {"requests": len(lat), "seconds": max(last_done - start_at, 1e-9),
            "latencies_ms": [round(x, 4) for x in lat], "errors": errors, "ids": new_ids,
            "reconnects": opened[0] - opened_before}


def client_worker_main() -> int:
    spec = json.loads(sys.stdin.readline())
    result = asyncio.run(_client_run(spec))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# ================================================================ /proc

def established(port: int) -> int:
    """ESTABLISHED TCP sockets whose local port is ``port`` (the server's side)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "01":
                n += 1
    return n


# ================================================================ the parent's handle


class ClientProc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, spec: dict[str, Any]) -> ClientProc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bench_api", "--client-worker", cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=1 << 28)
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(spec) + "\n").encode())
        await proc.stdin.drain()
        return cls(proc)

    async def line(self) -> bytes:
        assert self.proc.stdout is not None
        data = await self.proc.stdout.readline()
        if not data:
            await self.proc.wait()
            raise RuntimeError(f"a client process exited with {self.proc.returncode}")
        return data

    async def go(self, window: dict[str, float]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(window) + "\n").encode())
        await self.proc.stdin.drain()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
