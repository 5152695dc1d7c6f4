"""Small plugins for trying stockq out, for tests and for benchmarks.

Register them with ``STOCKQ_PLUGINS=plugins_bridge.examples:EXAMPLES``.
"""

from __future__ import annotations

import time
from typing import Any

from plugins_bridge.contract import Plugin, failure, success


class NoopPlugin(Plugin):
    name = "noop"
    description = "does nothing and succeeds (benchmarks)"

    def run(self, **params: Any) -> dict[str, Any]:
        return success(int(params.get("records", 0)))


class SleepPlugin(Plugin):
    name = "sleep"
    description = "sleeps `seconds` (default 1) and succeeds"

    def run(self, **params: Any) -> dict[str, Any]:
        time.sleep(float(params.get("seconds", 1)))
        return success(0)


class FailPlugin(Plugin):
    name = "fail"
    description = "returns a failed result with `error` (default 'failed on purpose')"
    default_max_attempts = 1

    def run(self, **params: Any) -> dict[str, Any]:
        return failure(str(params.get("error", "failed on purpose")))


EXAMPLES = [NoopPlugin(), SleepPlugin(), FailPlugin()]
