"""``stockq query "SQL"`` and ``stockq history``: ClickHouse through the sidecar, or
directly when none answers.

They ask ``POST /api/v1/query`` and ``GET /api/v1/history`` of the sidecar (the
embedded ClickHouse can only be held by one process, ``stockq run``, whose sidecar
answers for it).  When no sidecar answers they read the warehouse from this process,
read-only and through the same sandbox (app/query_local.py): a ClickHouse server
always, the embedded engine when no daemon holds it; otherwise they say what to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.parse
from typing import Any

from app.cli_format import local_time, table
from app.errors import QueryError, ReadOnlyViolation
from app.settings import load_settings

EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG = 1, 2, 5


class NoSidecar(Exception):
    """Nothing answers at the sidecar's address."""

    def __init__(self, base: str) -> None:
        super().__init__(base)
        self.base = base


def _call(args: argparse.Namespace, path: str, body: dict[str, Any] | None = None
          ) -> tuple[int, Any]:
    """(0, the JSON answer) or (an exit status, None) after printing why; NoSidecar
    when nothing answers (and no --url was given)."""
    settings = load_settings()
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    base = (args.url or f"http://{host}:{settings.api_port}").rstrip("/")
    headers = {"Content-Type": "application/json"}
    if settings.api_token:
        headers["Authorization"] = f"Bearer {settings.api_token}"
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, headers=headers,
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=settings.query_timeout + 10) as resp:
            result = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {err.code}"
        print(f"stockq: {message}", file=sys.stderr)
        return {400: EXIT_USAGE, 401: EXIT_CONFIG}.get(err.code, EXIT_FAILED), None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if not args.url and isinstance(reason, ConnectionRefusedError):
            raise NoSidecar(base) from None
        print(f"stockq: no sidecar answers at {base} ({reason}): start `stockq run` (or "
              "`stockq api`), or pass another --url", file=sys.stderr)
        return EXIT_FAILED, None
    return 0, result


def cmd_query(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"sql": args.sql}
    if args.max_rows:
        body["max_rows"] = args.max_rows
    try:
        code, result = _call(args, "/api/v1/query", body)
    except NoSidecar as none:
        from app.query_local import local_query, local_warehouse

        settings = load_settings()
        url = local_warehouse(settings, none.base)
        try:
            code, result = 0, asyncio.run(local_query(settings, url, args.sql, args.max_rows))
        except (ReadOnlyViolation, QueryError) as exc:  # what the sidecar answers with 400
            print(f"stockq: {exc.message}", file=sys.stderr)
            return EXIT_USAGE
    if code:
        return code
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(table(result["columns"], result["rows"]))
        print(f"({len(result['rows'])} rows)")
    return 0


HISTORY_COLUMNS = ("finished_at", "status", "plugin", "attempt", "records", "duration_ms",
                   "error_type", "task_id")


def cmd_history(args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("plugin", args.plugin), ("status", args.status),
                               ("execution_id", args.execution), ("since", args.since),
                               ("until", args.until), ("limit", str(args.limit))) if v}
    try:
        code, result = _call(args, "/api/v1/history?" + urllib.parse.urlencode(query))
    except NoSidecar as none:
        from app.query_local import local_history, local_warehouse

        url = local_warehouse(load_settings(), none.base)
        items = asyncio.run(local_history(
            url, plugin=args.plugin or "", status=args.status or "",
            execution_id=args.execution or "", since=args.since or "",
            until=args.until or "", limit=args.limit))
        code, result = 0, {"items": json.loads(json.dumps(items, default=str))}
    if code:
        return code
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    items = result["items"]
    zone = load_settings().timezone
    print(table(list(HISTORY_COLUMNS), [
        [local_time(i.get(c), zone) if c == "finished_at" else i.get(c)
         for c in HISTORY_COLUMNS] for i in items]))
    print(f"({len(items)} attempts)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("query", help="a read-only ClickHouse query (through the sidecar, or "
                                     "directly when none answers)")
    p.add_argument("sql", help="one SELECT, SHOW, DESCRIBE, EXPLAIN or EXISTS statement")
    p.add_argument("--max-rows", type=int, metavar="N", help="fewer rows than the cap")
    p.add_argument("--url", help="the sidecar (default http://STOCKQ_API_HOST:STOCKQ_API_PORT)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(sync_func=cmd_query)

    p = sub.add_parser("history", help="attempt history from the ClickHouse audit")
    p.add_argument("--plugin", help="only this plugin's attempts")
    p.add_argument("--status", choices=("completed", "failed", "retrying", "cancelled"),
                   help="only attempts that ended so")
    p.add_argument("--execution", metavar="ID", help="only this execution's attempts")
    p.add_argument("--since", help="a date (YYYY-MM-DD) or an ISO 8601 time")
    p.add_argument("--until", help="a date (YYYY-MM-DD) or an ISO 8601 time")
    p.add_argument("--limit", type=int, default=50, help="attempts to show (default 50)")
    p.add_argument("--url", help="the sidecar (default http://STOCKQ_API_HOST:STOCKQ_API_PORT)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(sync_func=cmd_history)
