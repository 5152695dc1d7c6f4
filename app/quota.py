"""The shared TuShare quota (per token and API), kept in Redis by the ``quota`` script.

Worker children ask their supervisor (they hold no Redis connection); the supervisor
asks Redis.  The token itself never reaches Redis: keys carry a digest of it."""

from __future__ import annotations

import hashlib

from app.queue import TaskQueue, new_id

WINDOW_MS = 60_000


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16] if token else "no-token"


class Quota:
    def __init__(self, queue: TaskQueue, token: str) -> None:
        self.queue = queue
        self.digest = token_digest(token)

    async def acquire(self, api: str, limit_per_minute: int) -> float:
        """0.0 when one call of ``api`` may go now (it is counted), else the seconds to
        wait before asking again."""
        if limit_per_minute <= 0:
            return 0.0
        wait_ms = await self.queue.run("quota", [self.queue.keys.quota(self.digest, api)],
                                       [limit_per_minute, WINDOW_MS, new_id()])
        return int(wait_ms) / 1000
