"""Plugins only the worker benchmark (bench/bench_worker.py) uses.

Registered with ``STOCKQ_PLUGINS=plugins_bridge.examples:EXAMPLES,bench.plugins:PLUGINS``
(PYTHONPATH must hold the repository root).
"""

from __future__ import annotations

import time
from typing import Any

from plugins_bridge.contract import Plugin, success
from plugins_bridge.progress import current_task


class SlowFirstAttempt(Plugin):
    """Sleeps ``seconds`` (default 60) on attempt 1 and succeeds at once on later
    attempts: a task whose supervisor is killed mid-run, then finished by another.
    The sleep honours SIGTERM (the worker child's default handling)."""

    name = "bench_slow_first"
    description = "sleeps on attempt 1 only (crash-recovery benchmark)"

    def run(self, **params: Any) -> dict[str, Any]:
        task = current_task()
        if task is not None and task.attempt > 1:
            return success(1)
        time.sleep(float(params.get("seconds", 60)))
        return success(1)


PLUGINS = [SlowFirstAttempt()]
