from __future__ import annotations

from stock_datasource.core.base_plugin import BasePlugin


class TushareDisabledPlugin(BasePlugin):
    @property
    def name(self) -> str:
        return "tushare_disabled"
