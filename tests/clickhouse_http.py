"""The part of ClickHouse's HTTP interface that stock_datasource's client uses, served
from the embedded engine (chdb-core), for tests.

No ClickHouse server recent enough can be installed on the test machines (Debian ships
18.16, which lacks table comments and ``ADD COLUMN IF NOT EXISTS``), so the real
plugins write here: stock_datasource's ``ClickHouseHttpClient`` posts the statement as
the body (or as the ``query`` parameter, with TabSeparated rows as the body) to ``/``
with ``?database=``.  The engine holds its data directory, so this runs as a process of
its own, one request at a time::

    python -m tests.clickhouse_http --path DIR [--port 0]

prints ``listening http://127.0.0.1:PORT`` and serves until SIGTERM.  A reply is the
statement's output in TabSeparated (or the ``FORMAT`` the statement names); an error is
HTTP 500 (404 for an unknown table or database) with ClickHouse's own message, as a
server sends it.  ``GET /ping`` answers ``Ok.``.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_NOT_FOUND = re.compile(r"\((UNKNOWN_TABLE|UNKNOWN_DATABASE)\)")
_CODE = re.compile(r"Code: (\d+)\.")
_NAME = re.compile(r"^\w+$")


class Engine:
    """One chdb session over ``path``; statements run one at a time."""

    def __init__(self, path: str) -> None:
        from chdb import session

        self.session = session.Session(path)

    def run(self, statement: str, database: str) -> str:
        if database:
            if not _NAME.match(database):
                raise ValueError(f"Code: 81. DB::Exception: Database {database!r} "
                                 "does not exist. (UNKNOWN_DATABASE)")
            self.session.query(f"USE {database}")
        result = self.session.query(statement, "TabSeparated")
        return "" if result is None else str(result)


def handler_class(engine: Engine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, text: str, code: str = "") -> None:
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/tab-separated-values; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            if code:
                self.send_header("X-ClickHouse-Exception-Code", code)
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, body: bytes) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/ping":
                self._answer(200, "Ok.\n")
                return
            params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            text = body.decode("utf-8")
            query = params.get("query")
            statement = f"{query}\n{text}" if query is not None else text
            try:
                self._answer(200, engine.run(statement, params.get("database", "")))
            except Exception as exc:  # ClickHouse's message, as a server sends it
                message = str(exc)
                code = _CODE.search(message)
                status = 404 if _NOT_FOUND.search(message) else 500
                self._answer(status, message + "\n", code.group(1) if code else "")

        def do_POST(self) -> None:
            self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def do_GET(self) -> None:
            self._serve(b"")

    return Handler


class ClickHouseHttp:
    """This server in a process of its own (the tests' side)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> ClickHouseHttp:
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.clickhouse_http", "--path", str(self.path)],
            cwd=root, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the ClickHouse HTTP server did not start: {line!r}")
        self.url = line.split(" ", 1)[1]
        return self

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def query(self, statement: str, database: str = "") -> str:
        """The reply's text; raises ``urllib.error.HTTPError`` on an error."""
        url = self.url + (f"/?database={database}" if database else "/")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(urllib.request.Request(url, data=statement.encode()),
                         timeout=60) as reply:
            return str(reply.read().decode("utf-8"))

    def rows(self, statement: str, database: str = "") -> list[list[str]]:
        return [line.split("\t") for line in self.query(statement, database).splitlines()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ClickHouseHttp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="the engine's data directory")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    engine = Engine(args.path)
    server = HTTPServer(("127.0.0.1", args.port), handler_class(engine))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
