"""The dashboard's static files, served at ``/`` and ``/dashboard/{name}``: no token
needed, a strict Content-Security-Policy, ETags, nothing outside the directory, every
file a page names is shipped, and nothing is fetched from another site."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from app.api.app import create_app
from app.api.dashboard import assets
from app.settings import Settings
from tests.api_support import V1, fails, registry
from tests.sidecar_support import GOOD_TOKEN


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(settings, registry=registry()))) as client:
        yield client


async def test_the_page_and_its_files_are_served_with_a_strict_policy(
        settings: Settings) -> None:
    guarded = replace(settings, api_token=GOOD_TOKEN)
    async with serve(guarded) as client:
        async with client.get("/") as resp:  # no token: the page holds no data
            assert resp.status == 200 and resp.content_type == "text/html"
            page = await resp.text()
            policy = resp.headers["Content-Security-Policy"]
            etag = resp.headers["ETag"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert '<script type="module" src="/dashboard/main.js">' in page
        async with client.get("/", headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        async with client.get("/dashboard/main.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        for name in ("nope.js", "..%2Fkeys.py", "index.html%00"):
            await fails(client, "GET", f"/dashboard/{name}", 404, "not_found")
        await fails(client, "GET", f"{V1}/session", 401, "unauthorized")


def test_every_file_the_dashboard_names_is_shipped_and_nothing_is_fetched_elsewhere(
) -> None:
    files = assets()
    assert {"index.html", "main.js", "core.js", "style.css", "icon.svg"} <= set(files)
    for name, asset in files.items():
        text = asset.body.decode("utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name  # no CDN
        for imported in re.findall(r'from "\./([\w.-]+)"', text):
            assert imported in files, (name, imported)
        for linked in re.findall(r'(?:src|href)="/dashboard/([\w.-]+)"', text):
            assert linked in files, (name, linked)
