"""The dashboard walk-through shared by tests/test_dashboard.py and the screenshot
script (``ops/dashboard-screenshots.sh``, which writes docs/dashboard/*.png):

against a running ``stockq run --demo``, in headless Chromium, run the daily sync from
the Schedules page's button, watch the Tasks page show its five tasks completed
without reloading (the live feed), start the demo's long task and cancel it from its
page, and find the loaded day on the Data page; a screenshot of every page on the way.

``python -m tests.dashboard_scenario OUT_DIR`` starts everything itself (a redis-server
on a free port, the demo, Chromium) and leaves the PNGs in OUT_DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.local_redis import LocalRedis, free_port
from tests.browser import Browser
from tests.workers import WorkerProcess, wait_until, worker_env

PAGES = ("overview", "schedules", "tasks", "executions", "execution", "task-running", "task",
         "history", "data")


@dataclass
class Walk:
    """What the walk-through saw."""

    execution_id: str = ""
    trade_date: str = ""
    long_task: str = ""
    shots: list[Path] = field(default_factory=list)


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return resp.status, json.loads(resp.read())


def start_demo(redis_url: str, workdir: Path) -> tuple[WorkerProcess, str]:
    """``stockq run --demo`` on a free port, once it answers."""
    port = free_port()
    env = worker_env(redis_url, STOCKQ_BUILTIN_PLUGINS="true", STOCKQ_PLUGINS="",
                     STOCKQ_DATA_DIR=str(workdir / "data"), TUSHARE_TOKEN="")
    proc = WorkerProcess(env, workdir / "run.log", "--demo", "--workers", "2", "--port",
                         str(port), command="run")
    wait_until(lambda: proc.events("daemon.started") or proc.proc.poll() is not None, 120,
               "stockq run --demo")
    assert proc.proc.poll() is None, proc.log_path.read_text()[-3000:]
    return proc, f"http://127.0.0.1:{port}"


async def page_ok(browser: Browser, what: str) -> None:
    """The page shows no error box and the browser reported no error."""
    alerts = await browser.eval(
        "[...document.querySelectorAll('.alert-error')].map(e => e.textContent)")
    assert alerts == [], f"{what}: the page shows {alerts}"
    assert browser.errors == [], f"{what}: {browser.errors}"


async def shoot(browser: Browser, shots: Path, name: str, walk: Walk) -> None:
    await page_ok(browser, name)
    path = shots / f"{name}.png"
    await browser.screenshot(path)
    walk.shots.append(path)


async def show(browser: Browser, link: str, ready: str, what: str) -> None:
    """Follow a navigation link (the #fragment changes; the page does not reload)."""
    await browser.click(f'#nav a[data-page="{link}"]')
    await browser.wait_for(ready, 30, what)


async def walk_through(browser: Browser, base: str, shots: Path) -> Walk:
    walk = Walk()
    await browser.goto(f"{base}/#/schedules")
    await browser.eval("window.stockqLoadedOnce = true")  # gone if the page ever reloads
    await browser.wait_for(
        "document.querySelector('#live').dataset.state === 'live' && "
        "!!document.querySelector('button[data-job=\"daily_sync\"]:not(:disabled)')",
        60, "the Schedules page and the live feed")
    await browser.click('button[data-job="daily_sync"]')
    link = await browser.wait_for(
        "document.querySelector('#fired a') && document.querySelector('#fired a')"
        ".getAttribute('href')", 30, "the daily sync to fire")
    walk.execution_id = link.rsplit("/", 1)[1]
    _, execution = call(base, "GET", f"/api/v1/executions/{walk.execution_id}")
    walk.trade_date = execution["tasks"][0]["trade_dates"][0]
    await shoot(browser, shots, "schedules", walk)

    await show(browser, "tasks", "document.querySelectorAll('#task-list tr[data-task-id]')"
                                 ".length >= 5", "the Tasks page")
    await browser.wait_for(
        "document.querySelectorAll('#task-list tr[data-status=\"completed\"]').length === 5",
        180, "five completed tasks on the Tasks page, without reloading it")
    events = int(await browser.eval("document.querySelector('#live').dataset.events"))
    assert events >= 10, f"the live feed delivered {events} events"
    assert await browser.eval("window.stockqLoadedOnce === true"), "the page reloaded"
    await shoot(browser, shots, "tasks", walk)

    await show(browser, "executions", "document.querySelector("
               "'#execution-list tr[data-status=\"completed\"]')", "the Executions page")
    await shoot(browser, shots, "executions", walk)
    await browser.click("#execution-list tr[data-status] a")
    await browser.wait_for("document.querySelectorAll('ol.steps li[data-status=\"completed\"]')"
                           ".length === 5", 30, "the execution's five plugins")
    await shoot(browser, shots, "execution", walk)

    # the demo's long task, cancelled from its page while it runs
    _, task = call(base, "POST", "/api/v1/tasks", {
        "plugin_name": "demo_long_backfill", "params": {"steps": 600, "interval": 0.5}})
    walk.long_task = task["task_id"]
    await browser.eval(f"location.hash = '#/tasks/{walk.long_task}'")
    await browser.wait_for(
        "document.querySelector('h1 .badge.running') && "
        "parseFloat(document.querySelector('#percent').textContent) >= 1",
        60, "the long task running, its progress moving")
    await browser.wait_for("document.querySelector('#progress-card').innerText"
                           ".includes('step ')", 30, "its progress message")
    await shoot(browser, shots, "task-running", walk)
    await browser.click("#cancel")
    await browser.wait_for("document.querySelector('h1 .badge.cancelled')", 60,
                           "the long task cancelled, shown without reloading")
    _, ended = call(base, "GET", f"/api/v1/tasks/{walk.long_task}")
    assert ended["status"] == "cancelled", ended
    await browser.wait_for("document.querySelector('#attempts .badge.cancelled') && "
                           "document.querySelector('#output')", 30,
                           "its attempt in the audit history and what it printed")
    await shoot(browser, shots, "task", walk)

    await show(browser, "overview", "document.querySelector('#health')", "the Overview")
    await browser.wait_for("document.querySelector('#health .badge')", 30, "health")
    await shoot(browser, shots, "overview", walk)

    await show(browser, "history", "document.querySelector('#daily .card')",
               "the History page and its daily chart")
    await browser.wait_for("document.querySelectorAll('main tbody tr td .badge.completed')"
                           ".length >= 5", 60, "five completed attempts in the history")
    await shoot(browser, shots, "history", walk)

    day = f"{walk.trade_date[:4]}-{walk.trade_date[4:6]}-{walk.trade_date[6:]}"
    await show(browser, "data", "document.querySelector('#coverage tr[data-table]')",
               "the Data page")
    latest = await browser.wait_for(
        "(document.querySelector('tr[data-table=\"ods_daily\"] .latest') || {}).textContent",
        30, "the latest day of ods_daily")
    assert latest == day, (latest, day)
    await shoot(browser, shots, "data", walk)
    await page_ok(browser, "the walk-through")
    return walk


async def _screenshots(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stockq-shots-"))
    with LocalRedis() as redis:
        proc, base = start_demo(redis.url, work)
        try:
            browser = await Browser.start()
            try:
                walk = await walk_through(browser, base, out)
            finally:
                await browser.close()
        finally:
            proc.stop()
    for path in walk.shots:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.dashboard_scenario",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="where the PNGs go (docs/dashboard)")
    return asyncio.run(_screenshots(parser.parse_args(argv).out))


if __name__ == "__main__":
    raise SystemExit(main())
