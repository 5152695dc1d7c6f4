from __future__ import annotations

from typing import Any

from stock_datasource.core.base_plugin import BasePlugin


class TushareBrokenPlugin(BasePlugin):
    """Its config cannot be read (so neither can is_enabled nor get_rate_limit)."""

    @property
    def name(self) -> str:
        return "tushare_broken"

    def get_config(self) -> dict[str, Any]:
        raise RuntimeError("config.json is not valid JSON")
