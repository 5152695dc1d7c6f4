"""``stockq doctor`` as a new operator runs it: clear findings, fixes, exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from plugins_bridge.tushare.fake_server import FakeTushare
from tests.conftest import ROOT
from tests.redis_server import RedisServer


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "doctor", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_stopped_redis_and_a_bad_token_are_reported(cli_env: dict[str, str],
                                                      own_redis: RedisServer,
                                                      tmp_path: Path) -> None:
    own_redis.stop()
    with FakeTushare(token="right-token") as fake:
        env = {**cli_env, "STOCKQ_REDIS_URL": own_redis.url, "STOCKQ_DATA_DIR": str(tmp_path),
               "STOCKQ_TUSHARE_URL": fake.url, "TUSHARE_TOKEN": "wrong-token-123"}
        proc = doctor(env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    redis_line = next(line for line in lines if line.startswith("FAIL  redis"))
    assert own_redis.url in redis_line and "unreachable" in redis_line
    assert any("fix: start Redis" in line for line in lines)
    tushare_line = next(line for line in lines if line.startswith("FAIL  tushare"))
    assert "token" in tushare_line and "wrong-token-123" not in proc.stdout
    assert any("fix: check TUSHARE_TOKEN" in line for line in lines)
    assert "Traceback" not in proc.stderr


def test_a_healthy_setup_passes(cli_env: dict[str, str], tmp_path: Path) -> None:
    with FakeTushare() as fake:
        env = {**cli_env, "STOCKQ_DATA_DIR": str(tmp_path), "STOCKQ_TUSHARE_URL": fake.url,
               "TUSHARE_TOKEN": fake.token or ""}
        proc = doctor(env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    findings = {(f["check"], f["level"]) for f in json.loads(proc.stdout)}
    assert {("redis", "ok"), ("tushare", "ok"), ("clickhouse", "ok"),
            ("plugins", "ok")} <= findings
    assert not any(level == "fail" for _, level in findings)
