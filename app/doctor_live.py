"""The checks of ``stockq doctor`` that read the namespace's live state in Redis: which
roles are alive (worker pools, schedulers, sidecars), what the workers can run and what
they could not load, tasks that wait for a worker none can be, recent failures, and
whether this is the demo (``stockq run --demo``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from app.keys import Keys
from app.liveness import Beat, live, stuck
from app.queue import TaskQueue
from app.redis_client import redis_errors
from app.settings import DEMO_NAMESPACE

FAILURE_WINDOW_SECONDS = 24 * 3600
FAILURES_READ = 200  # the newest failures whose error types are summarised


@dataclass(frozen=True, slots=True)
class Live:
    """What is alive in the namespace."""

    workers: list[Beat]
    schedulers: list[Beat]
    apis: list[Beat]

    @property
    def demo(self) -> bool:
        return any(b.demo for b in (*self.workers, *self.schedulers, *self.apis))


async def read_live(queue: TaskQueue) -> Live:
    return Live(await live(queue, "worker"), await live(queue, "scheduler"),
                await live(queue, "api"))


def _where(beats: list[Beat]) -> str:
    return ", ".join(f"{b.host} pid {b.pid}" for b in beats[:5]) + \
        (f" and {len(beats) - 5} more" if len(beats) > 5 else "")


def roles(state: Live, namespace: str, pending: int) -> list[tuple[str, str, str, str]]:
    """``(check, level, detail, fix)`` for each role."""
    out = []
    if state.workers:
        runs = sorted({p for w in state.workers for p in w.plugins})
        out.append(("workers", "ok", f"{len(state.workers)} live worker pool(s) ("
                    f"{_where(state.workers)}) running {', '.join(runs) or 'nothing'}", ""))
    else:
        level = "fail" if pending else "warn"
        waiting = f"; {pending} pending task(s) wait" if pending else ""
        out.append(("workers", level, f"no live worker in namespace {namespace!r}{waiting}",
                    "start `stockq worker` (or `stockq run`) with this namespace"))
    if state.schedulers:
        out.append(("scheduler", "ok", f"{len(state.schedulers)} live scheduler(s) ("
                    f"{_where(state.schedulers)})", ""))
    else:
        out.append(("scheduler", "warn", f"no live scheduler in namespace {namespace!r}: "
                    "scheduled syncs do not fire", "start `stockq scheduler` (or `stockq run`)"))
    if state.apis:
        urls = ", ".join(sorted({b.url for b in state.apis if b.url}))
        out.append(("sidecar", "ok", f"{len(state.apis)} live sidecar(s) at {urls}", ""))
    else:
        out.append(("sidecar", "warn", f"no live sidecar in namespace {namespace!r}: no HTTP "
                    "API; `stockq query` and `stockq history` read the warehouse directly",
                    "start `stockq api` (or `stockq run`)"))
    return out


def worker_plugins(state: Live) -> list[tuple[str, str, str, str]]:
    """Plugins the live workers could not load, or loaded and cannot run."""
    out = []
    for w in state.workers:
        who = f"worker {w.host} pid {w.pid}"
        if w.load_error:
            out.append(("plugins", "fail", f"{who} loaded no plugin: {w.load_error}",
                        "fix STOCKQ_PLUGINS (or the plugin) in that worker's environment"))
        for entry in w.unavailable:
            out.append(("plugins", "warn", f"{who} did not load {entry.get('name', '?')}: "
                        f"{entry.get('reason', '')}", "see the error; `stockq doctor` on "
                        "that host names the fix"))
        missing: dict[str, list[str]] = {}
        for plugin, why in sorted(w.not_runnable.items()):
            missing.setdefault(why, []).append(plugin)
        for why, plugins in missing.items():
            out.append(("plugins", "warn", f"{who} does not run {', '.join(plugins)}: {why}",
                        "give that worker what it lacks, or run these plugins elsewhere"))
    return out


async def waiting(queue: TaskQueue, state: Live) -> list[tuple[str, str, str, str]]:
    return [("routing", "warn", f"{count} pending task(s) of {plugin} wait: {reason}",
             "start a worker that can run them, or `stockq purge queue`")
            for plugin, _, count, reason in await stuck(queue, state.workers)]


async def failures(queue: TaskQueue) -> list[tuple[str, str, str, str]]:
    """Tasks that failed in the last 24 hours, by plugin and error type."""
    index = queue.keys.status_index("failed")
    since = queue.now_ms() - FAILURE_WINDOW_SECONDS * 1000
    with redis_errors(queue.settings):
        count = int(await queue.client.zcount(index, since, "+inf"))
        if not count:
            return [("failures", "ok", "no task failed in the last 24 h", "")]
        ids = await queue.client.zrevrangebyscore(index, "+inf", since, start=0,
                                                  num=FAILURES_READ)
        async with queue.client.pipeline(transaction=False) as pipe:
            for tid in ids:
                pipe.hmget(queue.keys.task(tid), ["plugin_name", "last_error_type"])
            rows = await pipe.execute()
    kinds = Counter(f"{plugin} {error or 'error'}" for plugin, error in rows if plugin)
    top = ", ".join(f"{what} x{n}" for what, n in kinds.most_common(4))
    return [("failures", "warn", f"{count} task(s) failed in the last 24 h ({top})",
             "`stockq tasks --status failed` lists them, `stockq status ID` shows why; "
             "`stockq retry ID` once fixed")]


async def demo_elsewhere(queue: TaskQueue) -> bool:
    """A demo daemon is alive in the demo namespace (this one is another)."""
    return bool(await live(queue, "worker", keys=Keys(DEMO_NAMESPACE)))
