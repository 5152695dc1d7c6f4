"""The demo's own plugin (``stockq run --demo`` registers it; nothing else does).

``demo_long_backfill`` stands in for a long backfill, so that the demo has a task that
runs long enough to watch and to cancel from the dashboard: it walks through ``steps``
(default 600) one every ``interval`` seconds (default 1), reporting progress and a
checkpoint at each, and prints a line every ten.  It touches no data and is scheduled
by no job: start it from the API, e.g. ``curl -s -X POST -H 'Content-Type:
application/json' localhost:8080/api/v1/tasks -d '{"plugin_name":
"demo_long_backfill"}'``.
"""

from __future__ import annotations

import time
from typing import Any

from plugins_bridge.contract import Plugin, success
from plugins_bridge.progress import report_progress


class LongBackfill(Plugin):
    name = "demo_long_backfill"
    description = "demo only: a slow stand-in for a backfill (progress every step; cancel it)"
    default_timeout_seconds = 3600
    default_max_attempts = 1
    groups = ("demo",)

    def run(self, **params: Any) -> dict[str, Any]:
        steps = max(1, int(params.get("steps", 600)))
        interval = max(0.0, float(params.get("interval", 1.0)))
        for step in range(1, steps + 1):
            time.sleep(interval)
            if step % 10 == 0 or step == 1:
                print(f"step {step} of {steps}", flush=True)
            report_progress(100.0 * step / steps, step, f"step {step} of {steps}",
                            checkpoint=str(step), force=True)
        return success(steps)


DEMO = [LongBackfill()]
