"""The README followed in order, as a newcomer would, with the demo daemon running: the
commands of "Trying it offline" and "Using the task core" are read from README.md and
run one after the other (``.venv/bin/stockq`` is this interpreter's ``stockq``, port 8080
a free one, ``<task_id>`` the id the step before printed); every one succeeds.

``ops/run.sh --demo`` itself starts the daemon, against the suite's Redis (it says which
Redis it uses) and through a virtualenv of links to this one, so it installs nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from app.local_redis import free_port
from tests.conftest import ROOT
from tests.workers import wait_until

pytestmark = pytest.mark.timeout(300)


def sections() -> dict[str, list[str]]:
    """The shell commands of each README section (``## title``), in order; a command
    continued with a backslash is one line."""
    out: dict[str, list[str]] = {}
    title = ""
    for block in re.split(r"^## ", (ROOT / "README.md").read_text(encoding="utf-8"),
                          flags=re.M):
        title = block.splitlines()[0].strip() if block.strip() else title
        for code in re.findall(r"```sh\n(.*?)```", block, re.S):
            joined = re.sub(r"\\\n\s*", "", code)
            out.setdefault(title, []).extend(ln for ln in joined.splitlines() if ln.strip())
    return out


class Shell:
    """Runs README lines as a user's shell would: ``export`` sets the environment."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port

    def line(self, text: str, **ids: str) -> str:
        text = text.replace(".venv/bin/stockq", f"{sys.executable} -m app.cli")
        text = text.replace("localhost:8080", f"localhost:{self.port}")
        for name, value in ids.items():
            text = text.replace(f"<{name}>", value)
        return text

    def run(self, text: str, **ids: str) -> str:
        command = self.line(text, **ids)
        if command.startswith("export "):
            name, _, value = command[len("export "):].partition("=")
            self.env[name] = value
            return ""
        proc = subprocess.run(["bash", "-c", command], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (text, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.stdout


def fake_venv(tmp: Path) -> Path:
    """A virtualenv ops/bootstrap.sh finds complete: this interpreter and a ``stockq``
    that runs this checkout, stamped after pyproject.toml."""
    venv = tmp / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    stockq = venv / "bin" / "stockq"
    stockq.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m app.cli "$@"\n')
    stockq.chmod(0o755)
    (venv / ".stockq-installed").touch()
    return venv


def test_the_readme_in_order_with_the_demo_running(redis_url: str, tmp_path: Path) -> None:
    readme = sections()
    assert readme["On a fresh machine"] == ["ops/run.sh", "ops/test.sh"]
    port = free_port()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("STOCKQ_", "TUSHARE")) and k.lower() not in
            ("http_proxy", "https_proxy", "no_proxy")}
    env = {**base, "STOCKQ_REDIS_URL": redis_url, "STOCKQ_DATA_DIR": str(tmp_path / "data"),
           "STOCKQ_API_PORT": str(port), "PYTHONPATH": str(ROOT),
           "STOCKQ_VENV": str(fake_venv(tmp_path)), "STOCKQ_LOG_FORMAT": "json"}
    log = open(tmp_path / "run.log", "wb")  # closed below
    daemon = subprocess.Popen([str(ROOT / "ops" / "run.sh"), "--demo", "--port", str(port)],
                              env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    shell = Shell(dict(env), port)
    try:
        wait_until(lambda: '"daemon.started"' in (tmp_path / "run.log").read_text()
                   or daemon.poll() is not None, 90, "ops/run.sh --demo")
        started = (tmp_path / "run.log").read_text()
        assert daemon.poll() is None, started[-3000:]
        assert "ops/run.sh: using the Redis that STOCKQ_REDIS_URL" in started
        assert "namespace 'demo'" in started

        offline = readme["Trying it offline"]
        fired = json.loads(shell.run(offline[0]))
        assert fired["outcome"] == "fired" and fired["tasks"] == 5
        listed = shell.run(offline[1])
        assert fired["execution_id"] in listed
        wait_until(lambda: r.hget(f"demo:execution:{fired['execution_id']}", "status")
                   == "completed", 120, "the demo's daily sync")
        rows = shell.run(offline[2])
        assert rows.splitlines()[0].split() == ["trade_date", "count()"]
        assert re.search(r"\s20$", rows.splitlines()[2]) and "(1 rows)" in rows
        wait_until(lambda: "(5 attempts)" in shell.run(offline[3]), 60, "five audit rows")
        workers = shell.run(offline[4])
        assert "fail, noop, sleep, tushare_adj_factor" in workers
        doctor = shell.run(offline[5])
        assert re.search(r"^ok\s+demo\s", doctor, re.M) and "FAIL" not in doctor

        core = readme["Using the task core"]
        assert shell.run(core[0]) == "" and shell.env["STOCKQ_PLUGINS"].endswith("EXAMPLES")
        task_id = json.loads(shell.run(core[1]))["task_id"]
        assert task_id in shell.run(core[2])
        assert "waiting: no live worker" in shell.run(core[3], task_id=task_id)
        assert shell.run(core[4], task_id=task_id).strip() == f"cancelled {task_id}"
        retried = shell.run(core[5], task_id=task_id).strip()
        new_id = retried.split(" as new task ")[1]
        assert "ready     high 1" in shell.run(core[6])
        worker = subprocess.Popen(["bash", "-c", shell.line(core[7])], env=shell.env,
                                  cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_until(lambda: r.hget(f"stock:task:{new_id}", "status") == "completed", 60,
                       "the worker of the task core")
        finally:
            os.killpg(worker.pid, signal.SIGINT)  # Ctrl-C: drains and stops
            assert worker.wait(60) == 0

        posted = json.loads(shell.run(core[8]))
        assert posted["plugin_name"] == "noop" and posted["created"] is True
        task: Any = json.loads(shell.run(core[9], task_id=posted["task_id"]))
        assert task["task_id"] == posted["task_id"]
        wait_until(lambda: json.loads(shell.run(core[9], task_id=posted["task_id"]))[
            "status"] == "completed", 60, "the demo running the HTTP task")
        health = json.loads(shell.run(core[10]))
        assert health["status"] in ("ok", "degraded") and health["workers"]["live"] == 1
        # nothing of the task core reached the demo's namespace, nor the reverse
        assert r.exists(f"demo:task:{task_id}") == 0 and r.exists(
            f"stock:task:{posted['task_id']}") == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(90)
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
