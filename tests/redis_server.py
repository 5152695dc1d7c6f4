"""Real redis-server processes for the tests, each on a free loopback port.

Never the machine's shared 6379: every server here is started by the suite, in its
own temporary directory, and stopped when the test or session ends.
"""

from __future__ import annotations

from app.local_redis import LocalRedis as RedisServer
from app.local_redis import free_port

__all__ = ["RedisServer", "free_port"]
