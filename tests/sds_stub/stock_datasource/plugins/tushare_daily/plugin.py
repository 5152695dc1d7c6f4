from __future__ import annotations

from stock_datasource.core.base_plugin import BasePlugin


class TushareDailyPlugin(BasePlugin):
    @property
    def name(self) -> str:
        return "tushare_daily"

    @property
    def version(self) -> str:
        return "2.1.0"

    @property
    def description(self) -> str:
        return "daily quotes of every A share"
