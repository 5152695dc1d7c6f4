"""The dashboard: static files shipped in the package (``app/dashboard/``), served at
``/`` (the page) and ``/dashboard/{name}`` (its scripts and styles).

There is no build step: the files are what the browser runs (ES modules, no library,
nothing fetched from another site).  They are read once, kept in memory with a content
hash as ETag, and sent with a Content-Security-Policy that lets the page load only its
own files and talk only to this sidecar.  The page and its files hold no data, so they
need no token; the JSON routes they call do (``STOCKQ_API_TOKEN``, docs/dashboard.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from aiohttp import web

from app.errors import NotFound

TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
         ".svg": "image/svg+xml"}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           "Cache-Control": "no-cache"}


class FileNotFound(NotFound):
    code = "not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"the dashboard has no file {name[:100]!r}")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@cache
def assets() -> dict[str, Asset]:
    """Every file of ``app/dashboard`` by name (the directory is flat)."""
    found: dict[str, Asset] = {}
    for entry in resources.files("app").joinpath("dashboard").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in TYPES:
            body = entry.read_bytes()
            found[entry.name] = Asset(body, TYPES[suffix],
                                      '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return found


def _serve(request: web.Request, name: str) -> web.Response:
    asset = assets().get(name)
    if asset is None:
        raise FileNotFound(name)
    headers = {**HEADERS, "ETag": asset.etag}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8",
                        headers=headers)


async def dashboard_page(request: web.Request) -> web.Response:
    return _serve(request, "index.html")


async def dashboard_file(request: web.Request) -> web.Response:
    return _serve(request, request.match_info["name"])
