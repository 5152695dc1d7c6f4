"""The dashboard in a real browser: ``stockq run --demo`` and headless Chromium
(Debian's ``chromium``, installed by ops/test.sh like redis-server).  The walk-through
(tests/dashboard_scenario.py) runs the daily sync from the Schedules page, sees the
five tasks completed on the Tasks page without a reload, cancels the demo's long task
from its page and finds the loaded day on the Data page; every page is screenshot
into a temporary directory, and any console error fails the test."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.browser import INSTALL, Browser, chromium_path
from tests.dashboard_scenario import PAGES, start_demo, walk_through
from tests.sidecar_support import GOOD_TOKEN, running_sidecar, sidecar_env

READ_TOKEN = "0123456789abcdef0123456789abcdef"

pytestmark = pytest.mark.timeout(600)

PNG = b"\x89PNG\r\n\x1a\n"


async def test_the_dashboard_runs_watches_and_cancels_in_a_browser(redis_url: str,
                                                                   tmp_path: Path) -> None:
    assert chromium_path() is not None, INSTALL
    proc, base = start_demo(redis_url, tmp_path)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        browser = await Browser.start()
        try:
            walk = await walk_through(browser, base, shots)
        except AssertionError as exc:  # what the page showed, for the report
            await browser.screenshot(shots / "failure.png")
            shown = await browser.eval("document.querySelector('main').innerText")
            raise AssertionError(f"{exc}\n--- the page ({shots / 'failure.png'}):\n"
                                 f"{str(shown)[:3000]}") from exc
        finally:
            errors = list(browser.errors)
            await browser.close()
    finally:
        code = proc.stop()
    assert errors == []
    assert code == 0, proc.log_path.read_text()[-3000:]
    assert sorted(p.stem for p in walk.shots) == sorted(PAGES)
    for path in walk.shots:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, path
    assert len(walk.execution_id) > 8 and walk.long_task


async def test_the_page_asks_for_the_token_once_and_a_read_only_one_cannot_act(
        redis_url: str, tmp_path: Path) -> None:
    """``stockq api`` with STOCKQ_API_TOKEN and a read-only token: the page asks once,
    then reads the routes and the live feed with the read-only token as a bearer header
    (a task queued meanwhile appears on the Tasks page without a reload), shows
    "read-only token" and its Cancel button disabled; the only errors are the first
    call's 401s."""
    assert chromium_path() is not None, INSTALL
    env = sidecar_env(redis_url, STOCKQ_API_TOKEN=GOOD_TOKEN, STOCKQ_API_READ_TOKEN=READ_TOKEN)
    with running_sidecar(env, tmp_path / "api.log") as api:
        browser = await Browser.start()
        try:
            await browser.goto(f"{api.origin}/#/tasks")
            await browser.wait_for("document.querySelector('#token-dialog').open", 30,
                                   "the token dialog")
            await browser.type("#token-input", READ_TOKEN)
            await browser.click("#token-form button[type=submit]")
            await browser.wait_for("document.querySelector('#live').dataset.state === 'live'",
                                   30, "the live feed, with the token")
            assert await browser.eval("document.querySelector('#access').textContent") \
                == "read-only token"
            request = urllib.request.Request(
                f"{api.origin}/api/v1/tasks", method="POST",
                data=json.dumps({"plugin_name": "sleep", "params": {"seconds": 60}}).encode(),
                headers={"Content-Type": "application/json",
                         "Authorization": f"Bearer {GOOD_TOKEN}"})
            with urllib.request.urlopen(request, timeout=30) as resp:
                task_id = json.loads(resp.read())["task_id"]
            await browser.wait_for(f"document.querySelector('tr[data-task-id=\"{task_id}\"]')",
                                   30, "the queued task, shown without a reload")
            await browser.eval(f"location.hash = '#/tasks/{task_id}'")
            await browser.wait_for("document.querySelector('#cancel')", 30, "its page")
            assert await browser.eval("document.querySelector('#cancel').disabled") is True
            assert await browser.eval("document.querySelectorAll('.alert-error').length") == 0
            assert await browser.eval("sessionStorage.getItem('stockq.token')") == READ_TOKEN
            errors = list(browser.errors)
        finally:
            await browser.close()
        requests = [e for e in api.events("api.request") if e["path"].startswith("/api/v1")]
    refused = [e for e in requests if e["status"] == 401]
    assert refused and all(e["path"] in ("/api/v1/session", "/api/v1/events")
                           for e in refused), refused
    assert all("401" in e for e in errors), errors  # the first call, before the token
    assert any(e["path"] == "/api/v1/events" and e["status"] == 200 for e in requests) \
        or any(e["path"] == "/api/v1/tasks" for e in requests)
