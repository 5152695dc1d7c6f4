"""Who can reach the sidecar: ``stockq api`` and ``stockq run`` refuse to listen beyond
loopback without a token (or with a token that is no secret) before binding anything;
``--insecure-no-auth`` lets an operator do it anyway, and then ``/health`` and ``stockq
doctor`` say so.  Every test runs the real command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.api.security import MIN_TOKEN_LENGTH, is_loopback, token_problem
from tests.conftest import ROOT
from tests.sidecar_support import GOOD_TOKEN, refused_start, running_sidecar, sidecar_env
from tests.test_delivery import env_example, exec_form, final_stage

FIX = ("STOCKQ_API_TOKEN", "127.0.0.1", "--insecure-no-auth")


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The refusal: exit 5 and exactly one line on stderr, nothing else."""
    assert proc.returncode == 5, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stockq: "), proc.stderr
    assert proc.stdout == ""
    return lines[0]


@pytest.mark.parametrize("command", [["api"], ["run", "--no-scheduler", "--workers", "1"]],
                         ids=["api", "run"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.10", "sidecar.example"])
def test_beyond_loopback_without_a_token_is_refused(redis_url: str, command: list[str],
                                                    host: str) -> None:
    proc = refused_start(sidecar_env(redis_url), *command, "--host", host)
    line = one_line(proc)
    assert all(fix in line for fix in FIX), line
    assert "beyond loopback" in line


def test_the_bind_address_of_the_environment_counts_too(redis_url: str) -> None:
    env = sidecar_env(redis_url, STOCKQ_API_HOST="0.0.0.0")
    line = one_line(refused_start(env, "api"))
    assert "0.0.0.0" in line and all(fix in line for fix in FIX)
    # refused before anything else: even without Redis, it is the configuration (5, not 3)
    env["STOCKQ_REDIS_URL"] = "redis://127.0.0.1:9/0"
    one_line(refused_start(env, "run"))


@pytest.mark.parametrize("token, fragment", [
    ("replace-with-a-long-random-string", "placeholder"),
    ("short-token", f"at least {MIN_TOKEN_LENGTH}"),
    ("a long token with spaces inside", "space"),
])
def test_a_token_that_is_no_secret_is_refused(redis_url: str, token: str,
                                              fragment: str) -> None:
    for host in ("127.0.0.1", "0.0.0.0"):
        env = sidecar_env(redis_url, STOCKQ_API_TOKEN=token)
        for command in (["api", "--host", host], ["run", "--host", host, "--no-scheduler"]):
            line = one_line(refused_start(env, *command))
            assert fragment in line and "openssl rand -hex 32" in line, line
            assert token not in line  # never echoed


def test_the_env_example_placeholder_does_not_work(redis_url: str) -> None:
    placeholder = env_example(include_commented=False)["STOCKQ_API_TOKEN"]
    assert token_problem(placeholder) is not None
    env = sidecar_env(redis_url, STOCKQ_API_TOKEN=placeholder)
    assert "placeholder" in one_line(refused_start(env, "api"))


def test_the_image_refuses_to_start_without_a_token(redis_url: str) -> None:
    """The Dockerfile's environment and command, run as they are: no open sidecar on
    0.0.0.0; the header comment says how to pass a token."""
    image_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(
        args for word, args in final_stage() if word == "ENV")))
    assert image_env["STOCKQ_API_HOST"] == "0.0.0.0"
    assert "STOCKQ_API_TOKEN" not in image_env
    env = sidecar_env(redis_url, STOCKQ_API_HOST=image_env["STOCKQ_API_HOST"])
    line = one_line(refused_start(env, *exec_form("CMD")))
    assert all(fix in line for fix in FIX)
    header = (ROOT / "Dockerfile").read_text(encoding="utf-8").split("\nFROM ")[0]
    assert "-e STOCKQ_API_TOKEN=$(openssl rand -hex 32)" in header


def test_loopback_names() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST",
                 "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", " ", "10.0.0.1", "::ffff:10.0.0.1", "example.com",
                 "127.0.0.1.example.com", "localhost.example.com"):
        assert not is_loopback(host), host


def test_insecure_no_auth_starts_warns_and_health_says_so(redis_url: str,
                                                          tmp_path: Path) -> None:
    with running_sidecar(sidecar_env(redis_url), tmp_path / "api.log", "--host", "0.0.0.0",
                         "--insecure-no-auth") as sidecar:
        health = sidecar.request("GET", "/health")
        assert health.status == 200, health.body
        assert health.body["status"] == "degraded"
        warning = next(w for w in health.body["warnings"] if "beyond loopback" in w)
        assert "0.0.0.0" in warning and "STOCKQ_API_TOKEN" in warning
        tasks = sidecar.request("GET", "/api/v1/tasks")
        assert tasks.status == 200  # it does answer without a token: that was asked for
        [event] = sidecar.events("api.insecure_no_auth")
        assert event["level"] == "warning" and event["host"] == "0.0.0.0"


def test_run_with_insecure_no_auth_answers_health(redis_url: str, tmp_path: Path) -> None:
    env = sidecar_env(redis_url, STOCKQ_API_HOST="0.0.0.0",
                      STOCKQ_CLICKHOUSE_URL="http://127.0.0.1:9/default")
    with running_sidecar(env, tmp_path / "run.log", "--insecure-no-auth", "--no-scheduler",
                         "--workers", "1", command="run") as sidecar:
        health = sidecar.request("GET", "/health")
        assert health.status == 200, health.body
        assert any("beyond loopback" in w for w in health.body["warnings"])
        assert sidecar.events("api.insecure_no_auth")


@pytest.mark.parametrize("host, token", [("127.0.0.1", ""), ("0.0.0.0", GOOD_TOKEN)],
                         ids=["loopback", "token"])
def test_a_safe_sidecar_starts_without_the_warning(redis_url: str, tmp_path: Path, host: str,
                                                   token: str) -> None:
    env = sidecar_env(redis_url, STOCKQ_API_TOKEN=token)
    with running_sidecar(env, tmp_path / "api.log", "--host", host) as sidecar:
        health = sidecar.request("GET", "/health")
        assert health.status == 200
        assert not any("beyond loopback" in w for w in health.body["warnings"])
        assert not sidecar.events("api.insecure_no_auth")
        if token:
            assert sidecar.request("GET", "/api/v1/tasks").status == 401
            assert sidecar.request("GET", "/api/v1/tasks",
                                   Authorization=f"Bearer {token}").status == 200


def doctor_api(env: dict[str, str]) -> tuple[int, list[dict[str, str]]]:
    proc = subprocess.run([sys.executable, "-m", "app.cli", "doctor", "--json"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    findings = json.loads(proc.stdout)
    return proc.returncode, [f for f in findings if f["check"] == "api"]


def test_doctor_warns_about_an_exposed_sidecar(redis_url: str) -> None:
    code, [api] = doctor_api(sidecar_env(redis_url, STOCKQ_API_HOST="0.0.0.0"))
    assert api["level"] == "warn", api
    assert "0.0.0.0" in api["detail"] and "--insecure-no-auth" in api["detail"]
    assert "STOCKQ_API_TOKEN" in api["fix"]

    _, [api] = doctor_api(sidecar_env(redis_url))
    assert api["level"] == "ok" and "127.0.0.1" in api["detail"]
    _, [api] = doctor_api(sidecar_env(redis_url, STOCKQ_API_HOST="0.0.0.0",
                                      STOCKQ_API_TOKEN=GOOD_TOKEN))
    assert api["level"] == "ok" and "bearer token" in api["detail"]
    _, findings = doctor_api(sidecar_env(redis_url, STOCKQ_API_CORS_ORIGINS="*"))
    assert [f["level"] for f in findings] == ["ok", "warn"]

    code, [api] = doctor_api(sidecar_env(redis_url,
                                         STOCKQ_API_TOKEN="replace-with-a-long-random-string"))
    assert code == 1 and api["level"] == "fail" and "placeholder" in api["detail"]
