"""The dashboard in a real browser: ``stockq run --demo`` and headless Chromium
(Debian's ``chromium``, installed by ops/test.sh like redis-server).  The walk-through
(tests/dashboard_scenario.py) runs the daily sync from the Schedules page, sees the
five tasks completed on the Tasks page without a reload, cancels the demo's long task
from its page and finds the loaded day on the Data page; every page is screenshot
into a temporary directory, and any console error fails the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import INSTALL, Browser, chromium_path
from tests.dashboard_scenario import PAGES, start_demo, walk_through

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
