"""What the live events cost the task core (docs/benchmarks.md, "Live events").

Run from the repository root::

    .venv/bin/python -m bench.bench_events [--n 2000] [--slices 12]

It starts its own redis-server on a free loopback port and measures:

1. the commands a transition could use to announce itself, each run 200,000 times
   inside one script (so only Redis's own time counts): nothing, ``PUBLISH`` with
   nobody subscribed, ``PUBLISH`` with one subscriber reading, and ``XADD ... MAXLEN ~
   10000`` to a capped stream;
2. the transition scripts as shipped (with their ``PUBLISH``) against the same
   scripts with the ``PUBLISH`` lines taken out, in alternating slices on one server:
   Redis's time per call (INFO commandstats) for enqueue and for claim + complete,
   medians over the slices, with and without a subscriber listening.

The machine's noise moves every figure; the alternating slices keep the comparison
between the two variants fair.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time
from collections.abc import Callable

import redis.asyncio as aioredis

import app.scripts as scripts
from app.keys import Keys
from app.models import TaskSpec
from app.queue import TaskQueue
from app.settings import Settings
from bench._measure import evalsha_usec, setup_logging
from bench._redis import BenchRedis

LOOPS = 200_000
CANDIDATES = {
    "nothing (the loop itself)": "for i = 1, {n} do local x = i end",
    "PUBLISH, nobody subscribed": "for i = 1, {n} do "
                                  "redis.call('PUBLISH', 'ev', 'completed 0123456789abcdef') end",
    "PUBLISH, one subscriber": "for i = 1, {n} do "
                               "redis.call('PUBLISH', 'ev', 'completed 0123456789abcdef') end",
    "XADD MAXLEN ~ 10000": "for i = 1, {n} do redis.call('XADD', 'st', 'MAXLEN', '~', "
                           "'10000', '*', 't', '0123456789abcdef', 's', 'completed') end",
}


async def commands(client: aioredis.Redis) -> None:
    print(f"== one command inside a script, {LOOPS:,} times (Redis's own time)")
    subscriber = client.pubsub()
    reader: asyncio.Task[None] | None = None
    for name, body in CANDIDATES.items():
        if name == "PUBLISH, one subscriber":
            await subscriber.subscribe("ev")
            reader = asyncio.create_task(_drain(subscriber))
        started = time.perf_counter()
        await client.eval(body.format(n=LOOPS) + " return 1", 0)  # type: ignore[misc]
        spent = time.perf_counter() - started
        print(f"  {name:32s} {spent / LOOPS * 1e6:6.2f} us each")
        if reader is not None:
            reader.cancel()
            reader = None
            await subscriber.aclose()  # type: ignore[no-untyped-call]
    print(f"  (the capped stream holds {await client.xlen('st'):,} entries, "
          f"{await client.memory_usage('st'):,} bytes)")
    await client.delete("st")


async def _drain(pubsub: aioredis.client.PubSub) -> None:
    while True:
        await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)


def variants() -> dict[str, Callable[[str], str]]:
    shipped = {n: scripts.script_source(n) for n in scripts.TRANSITIONS}
    quiet = {n: "\n".join(line for line in s.splitlines() if "PUBLISH" not in line)
             for n, s in shipped.items()}
    return {"with PUBLISH": shipped.__getitem__, "without": quiet.__getitem__}


def use(source: Callable[[str], str]) -> None:
    """Make the task core load and call these script sources."""
    scripts.script_source = source  # type: ignore[assignment]
    scripts.script_sha = lambda name: hashlib.sha1(  # type: ignore[assignment]
        source(name).encode("utf-8")).hexdigest()


async def transitions(url: str, n: int, slices: int, listening: bool) -> None:
    settings = Settings(redis_url=url, plugins=("plugins_bridge.examples:EXAMPLES",),
                        builtin_plugins=False)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    queue = TaskQueue(client, settings)
    subscriber = client.pubsub()
    reader = None
    if listening:
        await subscriber.subscribe(Keys(settings.key_prefix).events)
        reader = asyncio.create_task(_drain(subscriber))
    found: dict[tuple[str, str], list[float]] = {}
    choices = variants()
    for i in range(slices):
        order = list(choices.items()) if i % 2 == 0 else list(reversed(choices.items()))
        for label, source in order:
            use(source)
            calls0, usec0 = await evalsha_usec(client)
            for j in range(n):
                await queue.enqueue(TaskSpec.build("noop", params={"s": i, "j": j, "v": label}))
            calls1, usec1 = await evalsha_usec(client)
            for _ in range(n):
                task = await queue.claim("bench")
                assert task is not None
                await queue.complete(task)
            calls2, usec2 = await evalsha_usec(client)
            found.setdefault((label, "enqueue"), []).append(
                (usec1 - usec0) / (calls1 - calls0))
            found.setdefault((label, "claim + complete (2 calls)"), []).append(
                (usec2 - usec1) / (calls2 - calls1) * 2)
            await client.flushdb()  # each variant starts from empty indexes
    who = "one subscriber listening" if listening else "nobody subscribed"
    print(f"== the transition scripts, {slices} alternating slices of {n:,} tasks ({who})")
    for op in ("enqueue", "claim + complete (2 calls)"):
        for label in choices:
            xs = found[(label, op)]
            print(f"  {op:28s} {label:13s} median {statistics.median(xs):6.2f} us in Redis "
                  f"per task (slices {min(xs):.2f}-{max(xs):.2f})")
    if reader is not None:
        reader.cancel()
    await subscriber.aclose()  # type: ignore[no-untyped-call]
    await queue.aclose()
    await client.aclose()


async def run(args: argparse.Namespace) -> int:
    setup_logging("off")
    with BenchRedis() as server:
        client = aioredis.Redis.from_url(server.url)
        await commands(client)
        await client.aclose()
        for listening in (False, True):
            await transitions(server.url, args.n, args.slices, listening)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_events", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="tasks per slice")
    p.add_argument("--slices", type=int, default=12, help="slices per variant")
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
