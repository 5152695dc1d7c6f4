"""Plugins with schedules, for the scheduler tests (``tests.schedule_plugins:PLUGINS``).

``calendar`` and ``basics`` have no schedule of their own; ``bars`` is in the daily
sync and needs both; ``report`` has its own weekly trigger."""

from __future__ import annotations

from typing import Any

from plugins_bridge.contract import Plugin, success


class _Quick(Plugin):
    default_timeout_seconds = 30

    def run(self, **params: Any) -> dict[str, Any]:
        return success(len(params.get("trade_dates") or []))


class Calendar(_Quick):
    name = "calendar"


class Basics(_Quick):
    name = "basics"


class Bars(_Quick):
    name = "bars"
    schedule = "daily"
    dependencies = ("calendar", "basics")


class Indicators(_Quick):
    name = "indicators"
    schedule = "daily"
    dependencies = ("calendar",)


class Report(_Quick):
    name = "report"
    schedule = "weekly fri 19:30"


PLUGINS = [Calendar, Basics, Bars, Indicators, Report]
