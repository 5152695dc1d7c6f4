"""A counting HTTP forward proxy on loopback, for the proxy tests: it records every
request it carries and forwards requests for ``alias`` hosts to a real address."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class CountingProxy:
    def __init__(self, aliases: dict[str, str]) -> None:
        """``aliases``: host[:port] asked for -> host:port really contacted."""
        self.aliases = aliases
        self.seen: list[tuple[str, str]] = []  # (method, absolute URL)
        proxy = self
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                proxy.seen.append((self.command, self.path))
                parts = urlsplit(self.path)
                target = proxy.aliases.get(parts.netloc, parts.netloc)
                url = f"http://{target}{parts.path}" + (f"?{parts.query}" if parts.query else "")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                request = urllib.request.Request(url, data=body, method=self.command, headers={
                    k: v for k, v in self.headers.items()
                    if k.lower() not in ("host", "proxy-connection", "connection")})
                try:
                    with opener.open(request, timeout=30) as resp:
                        status, data, ctype = resp.status, resp.read(), resp.headers.get(
                            "Content-Type", "application/json")
                except urllib.error.HTTPError as err:
                    status, data, ctype = err.code, err.read(), "application/json"
                except OSError as err:
                    status, data, ctype = 502, str(err).encode(), "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
