"""Stand-in for ``stock_datasource.core.base_plugin``: config.json next to the plugin's
module, the accessors stockq's adapter reads, and a ``run`` that records its kwargs."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

# (plugin name, kwargs) of every run in this process, oldest first
CALLS: list[tuple[str, dict[str, Any]]] = []


class BasePlugin:
    api_rate_limit = 120

    def __init__(self) -> None:
        self._config: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def version(self) -> str:
        return "1.0.0"

    @property
    def description(self) -> str:
        return ""

    def get_config(self) -> dict[str, Any]:
        if self._config is None:
            path = Path(inspect.getfile(type(self))).parent / "config.json"
            if path.exists():
                self._config = json.loads(path.read_text(encoding="utf-8"))
            else:
                self._config = {"enabled": True, "rate_limit": self.api_rate_limit,
                                "timeout": 30, "retry_attempts": 3}
        return self._config

    def get_rate_limit(self) -> int:
        return int(self.get_config().get("rate_limit", self.api_rate_limit))

    def get_dependencies(self) -> list[str]:
        return []

    def is_enabled(self) -> bool:
        return bool(self.get_config().get("enabled", True))

    def extract(self, **kwargs: Any) -> dict[str, Any]:
        """What the run "loads": one item per keyword argument."""
        return dict(kwargs)

    def run(self, **kwargs: Any) -> dict[str, Any]:
        """``{"status": "success", "steps": {"load": {"total_records": len(kwargs)}}}``;
        ``fail="message"`` returns a failed result with that error instead."""
        CALLS.append((self.name, dict(kwargs)))
        if kwargs.get("fail"):
            return {"plugin": self.name, "status": "failed", "steps": {},
                    "error": str(kwargs["fail"])}
        items = self.extract(**kwargs)
        return {"plugin": self.name, "status": "success", "parameters": kwargs,
                "steps": {"extract": {"status": "success", "records": len(items)},
                          "load": {"status": "success", "total_records": len(items)}}}
