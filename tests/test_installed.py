"""stockq as a deployment installs it: ops/install-wheel.sh (what the Dockerfile runs)
builds the wheel and installs it, without the dev extra, into a fresh virtualenv outside
the checkout; the installed ``stockq`` then runs from a directory outside the checkout
with no PYTHONPATH: its help, a worker running a task, and ``stockq run --demo`` loading
the daily sync.  One install for the whole module (the dependencies make it the costly
part)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.local_redis import free_port
from app.logs import read_log_records
from tests.workers import wait_until

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "plugins_bridge")

# the install downloads and unpacks the dependencies (ClickHouse's engine among them)
pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Installed:
    home: Path       # a temporary directory outside the checkout: the cwd of every run
    venv: Path
    wheel: Path

    def stockq(self) -> str:
        return str(self.venv / "bin" / "stockq")

    def env(self, redis_url: str, **extra: str) -> dict[str, str]:
        """The machine's environment without anything pointing at the checkout or at a
        stockq configuration, plus the test's Redis and a data directory of its own."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STOCKQ_")
               and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
               and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        env.update(STOCKQ_REDIS_URL=redis_url, STOCKQ_LOG_FORMAT="json",
                   STOCKQ_DATA_DIR=tempfile.mkdtemp(prefix="data-", dir=self.home))
        env.update(extra)
        return env

    def run(self, env: dict[str, str], *args: str,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.stockq(), *args], env=env, cwd=self.home,
                              capture_output=True, text=True, timeout=timeout)


def outside_checkout(path: Path) -> bool:
    return not path.resolve().is_relative_to(ROOT)


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    home = Path(tempfile.mkdtemp(prefix="stockq-installed-"))
    assert outside_checkout(home)
    try:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PYTHON"] = sys.executable  # the suite's interpreter creates the virtualenv
        venv, wheels = home / "venv", home / "wheels"
        proc = subprocess.run(["bash", str(ROOT / "ops" / "install-wheel.sh"), str(venv),
                               str(wheels)], env=env, cwd=home, capture_output=True,
                              text=True, timeout=800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (wheel,) = wheels.glob("stockq-*.whl")
        yield Installed(home, venv, wheel)
    finally:
        shutil.rmtree(home, ignore_errors=True)  # the virtualenv takes about 1 GB


def checkout_files(*suffixes: str) -> set[str]:
    return {path.relative_to(ROOT).as_posix()
            for package in PACKAGES for path in (ROOT / package).rglob("*")
            if path.suffix in suffixes and "__pycache__" not in path.parts}


def test_the_wheel_holds_every_module_script_and_dashboard_file(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    modules, scripts = checkout_files(".py"), checkout_files(".lua")
    dashboard = checkout_files(".html", ".js", ".css", ".svg")
    assert "app/scheduler/__init__.py" in modules and "app/lua/lib.lua" in scripts
    assert {"app/dashboard/index.html", "app/dashboard/main.js"} <= dashboard
    assert sorted(modules - names) == []
    assert sorted(scripts - names) == []
    assert sorted(dashboard - names) == []
    tops = {name.split("/")[0] for name in names}
    assert tops == {*PACKAGES, "stockq-0.1.0.dist-info"}  # no tests, bench or ops


def test_the_installed_package_imports_from_the_virtualenv(installed: Installed) -> None:
    """``import app`` resolves into the virtualenv's site-packages, not the checkout,
    and every module of both packages imports from there."""
    program = (
        "import importlib, json, pkgutil, sys, sysconfig\n"
        "import app, plugins_bridge\n"
        "names = [m.name for p in (app, plugins_bridge)\n"
        "         for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]\n"
        "files = {n: importlib.import_module(n).__file__ for n in names}\n"
        "files.update(app=app.__file__, plugins_bridge=plugins_bridge.__file__)\n"
        "print(json.dumps({'files': files, 'path': sys.path,\n"
        "                  'purelib': sysconfig.get_paths()['purelib']}))\n")
    env = installed.env("redis://127.0.0.1:1/0")
    proc = subprocess.run([str(installed.venv / "bin" / "python"), "-c", program], env=env,
                          cwd=installed.home, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    site = Path(found["purelib"]).resolve()
    assert site.is_relative_to(installed.venv.resolve())
    assert all(outside_checkout(Path(p)) for p in found["path"] if p), found["path"]
    expected = {path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
                for path in checkout_files(".py")}
    assert set(found["files"]) == expected
    for name, file in found["files"].items():
        assert Path(file).resolve().is_relative_to(site), (name, file)


def test_the_installed_command_answers_help(installed: Installed) -> None:
    proc = installed.run(installed.env("redis://127.0.0.1:1/0"), "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for command in ("run", "worker", "scheduler", "api", "submit", "status", "doctor"):
        assert command in proc.stdout, command


def test_the_installed_worker_runs_a_submitted_task(installed: Installed,
                                                     redis_url: str) -> None:
    env = installed.env(redis_url, STOCKQ_PLUGINS="plugins_bridge.examples:EXAMPLES",
                        STOCKQ_BUILTIN_PLUGINS="false")
    submitted = installed.run(env, "submit", "noop", "--param-json", "records=3", "--json")
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    task_id = json.loads(submitted.stdout)["task_id"]
    log = installed.home / "worker.log"
    with open(log, "ab") as out:
        worker = subprocess.Popen([installed.stockq(), "worker", "--concurrency", "1"],
                                  env=env, cwd=installed.home, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        def finished() -> Any:
            status = installed.run(env, "status", task_id, "--json")
            assert status.returncode == 0, status.stderr[-3000:]
            task = json.loads(status.stdout)
            done = task["status"] in ("completed", "failed") or worker.poll() is not None
            return task if done else None

        task = wait_until(finished, 60, "the task", interval=0.2)
        assert worker.poll() is None, log.read_text()[-3000:]
        assert task["status"] == "completed", task
        assert task["records_processed"] == 3 and task["worker"]
        assert [r["task_id"] for r in read_log_records(log, "task.completed")] == [task_id]
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.wait()
    assert code == 0, log.read_text()[-3000:]


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_installed_demo_loads_the_daily_sync(installed: Installed, redis_url: str) -> None:
    port = free_port()
    env = installed.env(redis_url, STOCKQ_BUILTIN_PLUGINS="true", STOCKQ_PLUGINS="",
                        TUSHARE_TOKEN="")
    log = installed.home / "run.log"
    with open(log, "ab") as out:
        daemon = subprocess.Popen([installed.stockq(), "run", "--demo", "--workers", "2",
                                   "--port", str(port)], env=env, cwd=installed.home,
                                  stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: list(read_log_records(log, "daemon.started"))
                   or daemon.poll() is not None, 120, "stockq run --demo")
        assert daemon.poll() is None, log.read_text()[-3000:]
        status, health = call(base, "GET", "/health")
        assert status == 200 and health["clickhouse"]["status"] == "ok", health
        status, fire = call(base, "POST", "/api/v1/schedules/daily_sync/run")
        assert status == 202 and fire["tasks"] == 5, fire

        def finished() -> Any:
            _, execution = call(base, "GET", f"/api/v1/executions/{fire['execution_id']}")
            return execution if execution["status"] in ("completed", "failed") else None

        execution = wait_until(finished, 120, "the daily sync", interval=0.2)
        assert execution["status"] == "completed", execution["errors"]
        status, rows = call(base, "POST", "/api/v1/query",
                            {"sql": "SELECT count() FROM ods_stock_basic FINAL"})
        assert status == 200 and rows["rows"] == [[20]], rows
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(f"{base}/", timeout=30) as resp:  # the dashboard, package data
            assert '<script type="module" src="/dashboard/main.js">' in resp.read().decode()
        for name in ("main.js", "core.js", "style.css"):
            with direct.open(f"{base}/dashboard/{name}", timeout=30) as resp:
                assert resp.status == 200 and len(resp.read()) > 100, name
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
    assert code == 0, log.read_text()[-3000:]
