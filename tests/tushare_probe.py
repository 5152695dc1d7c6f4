"""A plugin that only calls TuShare (no ClickHouse), for the shared-quota test:
``calls`` requests of ``daily`` through the quota of 10 calls a minute.  With
``barrier`` (a directory) and ``parties``, each run first waits there until that many
runs have started, so the runs overlap (two workers with one slot each: one run in
each process, whichever claims first)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from app.settings import load_settings
from plugins_bridge import services
from plugins_bridge.contract import Plugin, success
from plugins_bridge.tushare.client import TushareClient


class Probe(Plugin):
    name = "tushare_probe"
    rate_limit_per_minute = 10
    default_timeout_seconds = 300

    def run(self, **params: Any) -> dict[str, Any]:
        settings = load_settings()
        client = TushareClient(settings.tushare_url, settings.tushare_token,
                               acquire=lambda api: services.current().acquire(
                                   api, self.rate_limit_per_minute))
        if params.get("barrier"):
            _wait_for_all(Path(str(params["barrier"])), int(params.get("parties", 2)))
        rows = 0
        with client:
            for _ in range(int(params.get("calls", 1))):
                rows += len(client.query("daily", {"trade_date": "20261127"}, "ts_code"))
        return success(rows)


def _wait_for_all(barrier: Path, parties: int, timeout: float = 60) -> None:
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / f"{os.getpid()}-{time.time_ns()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(barrier.iterdir())) < parties and time.monotonic() < deadline:
        time.sleep(0.02)


PLUGINS = [Probe]
