"""``stockq submit --wait`` follows a task run by a real worker to its end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, ROOT
from tests.workers import WorkerProcess, worker_env


def test_submit_wait_follows_the_task_and_exits_with_its_outcome(redis_url: str,
                                                                  tmp_path: Path) -> None:
    env = worker_env(redis_url, STOCKQ_PLUGINS=EXAMPLES)
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "1")
    try:
        worker.wait_started()

        def submit(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "app.cli", "submit", *args, "--wait"],
                                  env=env, cwd=ROOT, capture_output=True, text=True,
                                  timeout=60)

        ok = submit("sleep", "--param-json", "seconds=0.5")
        assert ok.returncode == 0, ok.stderr
        assert "completed" in ok.stdout
        lines = ok.stderr.splitlines()  # not a terminal: a line per change
        assert any(line.startswith("running") for line in lines)
        assert lines[-1].startswith("completed") and "100.0%" in lines[-1]
        assert "attempt 1/" in lines[-1]

        failed = submit("fail", "--max-attempts", "1")
        assert failed.returncode == 1
        assert failed.stderr.splitlines()[-1].startswith("failed ")
    finally:
        assert worker.stop() == 0
