"""A plugin module that starts a thread when it is imported (a metrics reporter, a
connection pool's keep-alive): a fork after that import would lose the thread, so a
pool that loads it starts its children as fresh interpreters."""

from __future__ import annotations

import threading
import time
from typing import Any


def _tick() -> None:
    while True:
        time.sleep(3600)


threading.Thread(target=_tick, name="import-time-thread", daemon=True).start()


class Threaded:
    name = "threaded"

    def run(self, **params: Any) -> dict[str, Any]:
        alive = any(t.name == "import-time-thread" for t in threading.enumerate())
        return {"status": "success" if alive else "failure",
                "error": "" if alive else "the import-time thread is missing",
                "steps": {"load": {"total_records": 1}}}


PLUGINS = [Threaded()]
