"""``stockq query "SQL"``: a read-only ClickHouse query through the sidecar.

It goes through ``POST /api/v1/query`` because the embedded ClickHouse can only be held
by one process (``stockq run``); against a ClickHouse server it works the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from app.settings import load_settings

EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG = 1, 2, 5


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def cmd_query(args: argparse.Namespace) -> int:
    settings = load_settings()
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    base = (args.url or f"http://{host}:{settings.api_port}").rstrip("/")
    body: dict[str, Any] = {"sql": args.sql}
    if args.max_rows:
        body["max_rows"] = args.max_rows
    headers = {"Content-Type": "application/json"}
    if settings.api_token:
        headers["Authorization"] = f"Bearer {settings.api_token}"
    request = urllib.request.Request(f"{base}/api/v1/query", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=settings.query_timeout + 10) as resp:
            result = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {err.code}"
        print(f"stockq: {message}", file=sys.stderr)
        return {400: EXIT_USAGE, 401: EXIT_CONFIG}.get(err.code, EXIT_FAILED)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        print(f"stockq: no sidecar answers at {base} ({reason}): start `stockq run` (or "
              "`stockq api`), or pass --url", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(_table(result["columns"], result["rows"]))
        print(f"({len(result['rows'])} rows)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("query", help="a read-only ClickHouse query through the sidecar")
    p.add_argument("sql", help="one SELECT, SHOW, DESCRIBE, EXPLAIN or EXISTS statement")
    p.add_argument("--max-rows", type=int, metavar="N", help="fewer rows than the cap")
    p.add_argument("--url", help="the sidecar (default http://STOCKQ_API_HOST:STOCKQ_API_PORT)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(sync_func=cmd_query)
