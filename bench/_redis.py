"""The benchmarks' own redis-server (a free loopback port, never 6379)."""

from __future__ import annotations

from app.local_redis import LocalRedis as BenchRedis

__all__ = ["BenchRedis"]
