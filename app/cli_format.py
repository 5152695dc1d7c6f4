"""How the command line shows things: tables with a header row and aligned columns, and
one time convention — tables show times in the configured zone (``STOCKQ_TIMEZONE``,
Asia/Shanghai) with its offset; ``--json`` output keeps ISO 8601 with the offset."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from app.models import Task


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True, default=str))


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A header row, a rule, then the rows, each column as wide as its widest cell (the
    last one not padded)."""
    cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]),
                      *(line(r) for r in cells)])


def local_time(value: datetime | str | None, zone: str) -> str:
    """``2026-12-04 18:00:05+08:00``: a time in ``zone`` with its offset ('-' for none).
    Accepts an aware or naive (UTC) datetime, or ISO 8601 text."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(ZoneInfo(zone)).isoformat(sep=" ", timespec="seconds")


def ago(ms: float, now_ms: float) -> str:
    seconds = max(0.0, (now_ms - ms) / 1000)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


TASK_COLUMNS = ("TASK ID", "STATUS", "PLUGIN", "TYPE", "PROGRESS", "ATTEMPT", "CREATED",
                "ERROR")


def task_row(t: Task, zone: str) -> list[str]:
    return [t.task_id, t.status.value, t.plugin_name, t.task_type, f"{t.progress:.1f}%",
            f"{t.attempt}/{t.max_attempts}", local_time(t.created_at, zone),
            t.last_error_type or ""]


_TIMES = ("created_at", "updated_at", "started_at", "completed_at", "next_run_at",
          "deadline_at")
_UNSET_WHEN_ZERO = ("memory_limit_mb", "output_bytes", "output_attempt")


def show_task(t: Task, zone: str) -> None:
    """``stockq status``: one field per line (times in ``zone``), then the output of the
    last attempt that printed something."""
    d = t.to_dict()
    output = d.pop("output", "")
    for key in _TIMES:
        d[key] = local_time(getattr(t, key), zone) if getattr(t, key) else None
    width = max(len(k) for k in d)
    for key in sorted(d):
        value = d[key]
        if value in (None, "", [], {}) or (value == 0 and key in _UNSET_WHEN_ZERO):
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value, ensure_ascii=False)
        print(f"{key:<{width}}  {value}")
    if output:
        kept = len(output.encode("utf-8"))
        whole = "all" if kept >= t.output_bytes else f"the last {kept:,} of {t.output_bytes:,}"
        print(f"\noutput of attempt {t.output_attempt} ({whole} bytes, masked):")
        for line in output.splitlines():
            print(f"  | {line}")


def say(text: str) -> None:
    """A remark on stderr (what a command says besides its answer)."""
    print(text, file=sys.stderr, flush=True)
