"""A plugin that only calls TuShare (no ClickHouse), for the shared-quota test:
``calls`` requests of ``daily`` through the quota of 10 calls a minute."""

from __future__ import annotations

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
        rows = 0
        with client:
            for _ in range(int(params.get("calls", 1))):
                rows += len(client.query("daily", {"trade_date": "20261127"}, "ts_code"))
        return success(rows)


PLUGINS = [Probe]
