"""What a worker pool can run, and what it tells the others (capability routing).

A pool's children load the plugins and name, in their ``ready`` message, every plugin
they loaded and what each one requires (a plugin's ``requires``: ``tushare_token``, a
TuShare token in the worker's settings; ``warehouse``, a ClickHouse this supervisor can
load rows into).  The pool *advertises* the plugins whose requirements it meets, for the
named queues it serves: its claims take only those tasks (lib.lua: can_run; the others
are parked for a worker that can), and its heartbeat lists them for ``/health``,
``stockq status``, ``stockq workers`` and ``stockq doctor`` (app/liveness.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.settings import Settings

NO_TOKEN = "no TuShare token (set TUSHARE_TOKEN)"
NO_WAREHOUSE = ("no ClickHouse (set STOCKQ_CLICKHOUSE_URL to a server; the embedded engine "
                "is opened by `stockq run` only)")


@dataclass(frozen=True, slots=True)
class Capabilities:
    plugins: tuple[str, ...]  # what the pool advertises and claims
    queues: tuple[str, ...]
    # plugins the children loaded that this pool cannot run, and why
    not_runnable: dict[str, str] = field(default_factory=dict)
    load_error: str = ""  # the plugins could not be loaded at all
    unavailable: list[dict[str, str]] = field(default_factory=list)  # modules not loaded

    def heartbeat_fields(self) -> dict[str, str]:
        """The heartbeat hash fields (JSON values) other processes read."""
        return {"plugins": json.dumps(list(self.plugins)),
                "queues": json.dumps(list(self.queues)),
                "not_runnable": json.dumps(self.not_runnable, ensure_ascii=False),
                "load_error": self.load_error,
                "unavailable": json.dumps(self.unavailable, ensure_ascii=False)}


def missing(requirement: str, settings: Settings, *, warehouse: bool) -> str:
    """Why this pool cannot meet ``requirement`` ('' when it can)."""
    if requirement == "tushare_token":
        return "" if settings.tushare_token else NO_TOKEN
    if requirement == "warehouse":
        return "" if warehouse else NO_WAREHOUSE
    return f"it requires {requirement!r}, which this version of stockq does not provide"


def capabilities(ready: dict[str, Any], settings: Settings, *, warehouse: bool,
                 queues: Iterable[str]) -> Capabilities:
    """The pool's capabilities from a child's ``ready`` message."""
    runnable: list[str] = []
    not_runnable: dict[str, str] = {}
    for entry in ready.get("plugins") or ():
        name, requires = str(entry[0]), [str(r) for r in entry[1]]
        reasons = [why for r in requires if (why := missing(r, settings, warehouse=warehouse))]
        if reasons:
            not_runnable[name] = "; ".join(reasons)
        else:
            runnable.append(name)
    unavailable = [dict(u) for u in ready.get("unavailable") or ()]
    return Capabilities(tuple(sorted(runnable)), tuple(dict.fromkeys(queues)), not_runnable,
                        str(ready.get("load_error") or ""), unavailable)
