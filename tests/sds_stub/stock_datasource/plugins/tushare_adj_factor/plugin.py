from __future__ import annotations

import os
from typing import Any

from stock_datasource.core.base_plugin import BasePlugin


class TushareAdjFactorPlugin(BasePlugin):
    """Depends on tushare_daily; its result says whether HTTP_PROXY was set during the
    run (in ``http_proxy_set`` and in ``message``, which the worker keeps)."""

    @property
    def name(self) -> str:
        return "tushare_adj_factor"

    def get_dependencies(self) -> list[str]:
        return ["tushare_daily"]

    def run(self, **kwargs: Any) -> dict[str, Any]:
        result = super().run(**kwargs)
        proxy_set = bool(os.environ.get("HTTP_PROXY"))
        result["http_proxy_set"] = proxy_set
        result["message"] = "HTTP_PROXY set" if proxy_set else "HTTP_PROXY not set"
        return result
