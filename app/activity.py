"""What the queue did lately, read from the status indexes (``GET /api/v1/stats``).

A task's entry in ``{p}:index:status:{status}`` is scored with the time it entered that
status (ms), so "completed in the last hour" is one ``ZCOUNT`` and a per-minute
throughput series is one ``ZCOUNT`` per minute: a single pipelined round trip, O(log n)
per number whatever the backlog.  Ended tasks leave the indexes with their retention
(``STOCKQ_RETENTION_DAYS``), so a window longer than it counts only what is kept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.keys import PRIORITIES
from app.models import TaskStatus
from app.queue import TaskQueue
from app.redis_client import redis_errors

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
BUCKET_MS = 60_000  # one point of the throughput series per minute
BUCKETS = 60  # the last hour
ENDED = (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value)
SERIES = (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


async def recent_activity(queue: TaskQueue) -> dict[str, Any]:
    """Queue depths, tasks ended in the last hour and day, and the last hour's
    completed/failed per minute (oldest first; the last point is the current minute)."""
    k = queue.keys
    now = queue.now_ms()
    start = (now // BUCKET_MS - BUCKETS + 1) * BUCKET_MS
    with redis_errors(queue.settings):
        async with queue.client.pipeline(transaction=False) as pipe:
            for p in PRIORITIES:
                pipe.llen(k.queue(p))
            pipe.zcard(k.delayed)
            pipe.scard(k.running)
            for status in (TaskStatus.PENDING.value, TaskStatus.RETRYING.value):
                pipe.zcard(k.status_index(status))
            for window in (HOUR_MS, DAY_MS):
                for status in ENDED:
                    pipe.zcount(k.status_index(status), now - window, "+inf")
            for status in SERIES:
                for i in range(BUCKETS):
                    low = start + i * BUCKET_MS
                    pipe.zcount(k.status_index(status), low, f"({low + BUCKET_MS}")
            res = [int(v) for v in await pipe.execute()]
    n = len(PRIORITIES)
    ready = {str(p): res[i] for i, p in enumerate(PRIORITIES)}
    at = n + 4
    recent: dict[str, dict[str, int]] = {}
    for name in ("hour", "day"):
        recent[name] = dict(zip(ENDED, res[at:at + len(ENDED)], strict=True))
        at += len(ENDED)
    series: dict[str, list[int]] = {}
    for status in SERIES:
        series[status] = res[at:at + BUCKETS]
        at += BUCKETS
    return {
        "queue": {"ready": ready, "ready_total": sum(ready.values()), "delayed": res[n],
                  "running": res[n + 1], "pending": res[n + 2], "retrying": res[n + 3]},
        "recent": recent,
        "throughput": {"bucket_seconds": BUCKET_MS // 1000, "start": _iso(start), **series},
        "timezone": queue.settings.timezone,
        "checked_at": _iso(now),
    }
