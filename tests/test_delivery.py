"""The delivery files agree with the code: the Dockerfile, ops/docker-compose.yml,
ops/stockq.env.example and the systemd units run real ``stockq`` subcommands, and every
setting they name is a documented, valid one."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.cli import build_parser
from app.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "ops"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = OPS / "docker-compose.yml"
ENV_EXAMPLE = OPS / "stockq.env.example"
SYSTEMD = OPS / "systemd"

DAEMON_ROLES = {"run", "api", "scheduler", "worker"}
STOCKQ_SERVICES = ("api", "scheduler", "worker")
WORKER_DEFAULT_GRACE = 30.0


def stockq_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``stockq`` arguments exactly as the console script does; fail, not exit."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`stockq {shlex.join(argv)}` is not a valid command line (exit {exc.code})")


def seconds(value: str) -> float:
    """``60``, ``60s``, ``1min``, ``1m30s`` (systemd and compose durations) in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert parts and "".join(n + u for n, u in parts) == value.replace(" ", ""), value
    return sum(float(n) * units[u] for n, u in parts)


# ------------------------------------------------------------------ Dockerfile
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last build stage (what the image runs)."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def exec_form(instruction: str) -> list[str]:
    values = [args for word, args in final_stage() if word == instruction]
    assert values, f"the Dockerfile has no {instruction}"
    parsed = json.loads(values[-1])  # exec form: stockq itself receives SIGTERM
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed)
    return parsed


def test_dockerfile_base_user_port_and_environment() -> None:
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any(word == "EXPOSE" and "8080" in args.split() for word, args in stage)
    env = " ".join(args for word, args in stage if word == "ENV")
    for setting in ("STOCKQ_API_HOST=0.0.0.0", "STOCKQ_LOG_FORMAT=json", "PYTHONUNBUFFERED=1",
                    "STOCKQ_DATA_DIR=/var/lib/stockq"):
        assert setting in env.split(), setting


def test_dockerfile_installs_the_wheel_as_the_suite_does() -> None:
    """The image installs through ops/install-wheel.sh, the script the suite's
    tests/test_installed.py installs with and then runs: a wheel, without the dev
    extra, never an editable install."""
    runs = [args for word, args in dockerfile_instructions() if word == "RUN"]
    assert [args for args in runs if "ops/install-wheel.sh /opt/stockq/.venv" in args]
    assert not [args for args in runs if "pip install" in args or "pip wheel" in args]
    script = (OPS / "install-wheel.sh").read_text(encoding="utf-8")
    assert "[dev]" not in script and " -e " not in script
    assert "install-wheel.sh" in (ROOT / "tests" / "test_installed.py").read_text("utf-8")
    copied = " ".join(args for word, args in dockerfile_instructions() if word == "COPY")
    for source in ("pyproject.toml", "README.md", "app/", "plugins_bridge/",
                   "ops/install-wheel.sh", "ops/fake_tushare.py"):
        assert source in copied, source


def test_dockerfile_default_command_is_a_stockq_daemon() -> None:
    assert exec_form("ENTRYPOINT") == ["stockq"]
    args = stockq_args(exec_form("CMD"))
    assert args.command == "run"


def healthcheck_command() -> list[str]:
    checks = [args for word, args in final_stage() if word == "HEALTHCHECK"]
    assert len(checks) == 1 and "/health" in checks[0]
    _, cmd_marker, command = checks[0].partition(" CMD ")
    assert cmd_marker, "HEALTHCHECK needs a CMD"
    argv = json.loads(command)
    assert argv[0] == "python"  # the slim image has no curl
    return [sys.executable, *argv[1:]]


class _HealthServer(ThreadingHTTPServer):
    health_status = 200


class _Health(BaseHTTPRequestHandler):
    server: _HealthServer

    def do_GET(self) -> None:
        code = self.server.health_status if self.path == "/health" else 404
        body = b'{"status": "ok"}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[_HealthServer]:
    server = _HealthServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_dockerfile_healthcheck_passes_on_200_and_fails_on_503(
        health_server: _HealthServer) -> None:
    """The HEALTHCHECK command itself, run against a stand-in /health (with a proxy in
    the environment that it must not use)."""
    port = health_server.server_address[1]
    env = {"PATH": "/usr/bin:/bin", "STOCKQ_API_PORT": str(port),
           "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    command = healthcheck_command()
    outcomes = {}
    for status in (200, 503):
        health_server.health_status = status
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        outcomes[status] = proc.returncode
    assert outcomes == {200: 0, 503: 1}


# ------------------------------------------------------------------ compose
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def argv_of(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def test_compose_stockq_services_run_real_subcommands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    built = {name for name, svc in services.items() if "build" in svc}
    assert set(STOCKQ_SERVICES) <= built
    roles = {}
    for name in sorted(built):
        svc = services[name]
        entrypoint = argv_of(svc.get("entrypoint", exec_form("ENTRYPOINT")))
        assert entrypoint == ["stockq"], name
        args = stockq_args(argv_of(svc.get("command", exec_form("CMD"))))
        assert args.command in DAEMON_ROLES, name
        roles[name] = args
    assert {name: roles[name].command for name in STOCKQ_SERVICES} == {
        "api": "api", "scheduler": "scheduler", "worker": "worker"}
    assert roles["worker"].concurrency == 2


def test_compose_builds_from_the_repository_with_the_env_file(compose: dict[str, Any]) -> None:
    for name in STOCKQ_SERVICES:
        svc = compose["services"][name]
        build = svc["build"]
        context, dockerfile = ((build, "Dockerfile") if isinstance(build, str)
                               else (build["context"], build.get("dockerfile", "Dockerfile")))
        assert (COMPOSE.parent / context).resolve() == ROOT, name
        assert (ROOT / dockerfile).resolve() == DOCKERFILE, name
        env_files = argv_of(svc["env_file"]) if isinstance(svc["env_file"], str) \
            else [e if isinstance(e, str) else e["path"] for e in svc["env_file"]]
        assert env_files == ["stockq.env"], name


def test_compose_dependencies_wait_for_healthy_backends(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in STOCKQ_SERVICES:
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        assert set(depends) == {"redis", "clickhouse"}, name
        for backend, rule in depends.items():
            assert rule["condition"] == "service_healthy", (name, backend)
            assert services[backend]["healthcheck"]["test"], backend


def test_compose_worker_is_scalable_and_drains(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    grace = stockq_args(argv_of(worker["command"])).shutdown_grace
    assert grace == WORKER_DEFAULT_GRACE
    assert seconds(str(worker["stop_grace_period"])) > grace


def test_compose_only_the_api_has_an_http_healthcheck(compose: dict[str, Any]) -> None:
    """The image's HEALTHCHECK requests /health; roles without a listener disable it."""
    services = compose["services"]
    assert services["api"]["ports"] == ["8080:8080"]
    assert services["api"].get("healthcheck", {}).get("disable") is not True
    for name in ("scheduler", "worker"):
        assert services[name]["healthcheck"] == {"disable": True}, name


def test_compose_backends(compose: dict[str, Any]) -> None:
    redis_svc = compose["services"]["redis"]
    assert redis_svc["image"].startswith("redis:7")
    command = argv_of(redis_svc["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "redis-cli ping" in " ".join(argv_of(redis_svc["healthcheck"]["test"]))
    assert any(str(v).endswith(":/data") for v in redis_svc["volumes"])

    ch = compose["services"]["clickhouse"]
    assert ch["image"] == "clickhouse/clickhouse-server:24.8"
    assert "/ping" in " ".join(argv_of(ch["healthcheck"]["test"]))
    assert ch["ulimits"]["nofile"]
    assert any(str(v).endswith(":/var/lib/clickhouse") for v in ch["volumes"])
    for backend in ("redis", "clickhouse"):
        assert "ports" not in compose["services"][backend], backend


# ------------------------------------------------------------------ env example
def env_example(include_commented: bool) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if include_commented:
            line = line.lstrip("#").strip()
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            values[match[1]] = match[2]
    return values


def test_env_example_sets_the_backends_and_the_token() -> None:
    active = env_example(include_commented=False)
    for name in ("STOCKQ_REDIS_URL", "STOCKQ_CLICKHOUSE_URL", "TUSHARE_TOKEN",
                 "STOCKQ_API_TOKEN"):
        assert name in active, name
    assert "STOCKQ_HTTP_PROXY" in env_example(include_commented=True)
    assert "STOCKQ_HTTP_PROXY" not in active
    # systemd's EnvironmentFile has no inline comments: a " #" would end up in the value
    assert not [k for k, v in active.items() if " #" in v or v.startswith("#")]


def test_env_example_points_at_the_compose_services(compose: dict[str, Any]) -> None:
    active = env_example(include_commented=False)
    redis_url = urlsplit(active["STOCKQ_REDIS_URL"])
    ch_url = urlsplit(active["STOCKQ_CLICKHOUSE_URL"])
    assert (redis_url.scheme, redis_url.hostname) == ("redis", "redis")
    # the separate roles refuse the embedded engine: a server URL is required
    assert (ch_url.scheme, ch_url.hostname, ch_url.port) == ("http", "clickhouse", 8123)
    assert {redis_url.hostname, ch_url.hostname} <= set(compose["services"])


def test_env_example_is_a_valid_configuration() -> None:
    everything = env_example(include_commented=True)
    settings = load_settings(everything)  # raises ConfigError on an invalid value
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.log_format == "json"
    assert settings.tushare_token


def test_env_example_settings_are_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    names = set(re.findall(r"\bSTOCKQ_[A-Z0-9_]+", ENV_EXAMPLE.read_text(encoding="utf-8")))
    assert "STOCKQ_REDIS_URL" in names
    assert sorted(n for n in names if f"`{n}`" not in doc) == []


# ------------------------------------------------------------------ systemd
def unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> values (systemd allows repeated keys)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"{path.name}: {raw!r}"
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


UNITS = {"stockq-api.service": "api", "stockq-scheduler.service": "scheduler",
         "stockq-worker@.service": "worker"}


def test_the_systemd_units_exist() -> None:
    assert sorted(p.name for p in SYSTEMD.glob("*.service")) == sorted(UNITS)
    assert (SYSTEMD / "README.md").is_file()


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_unit_runs_its_role(name: str) -> None:
    entries = unit(SYSTEMD / name)
    (exec_start,) = entries["Service.ExecStart"]
    argv = shlex.split(exec_start.lstrip("-@:+!"))
    assert argv[0] == "/opt/stockq/.venv/bin/stockq"
    args = stockq_args(argv[1:])
    assert args.command == UNITS[name]
    assert entries["Service.Type"] == ["simple"]
    assert entries["Service.User"] == ["stockq"]
    assert entries["Service.Restart"] == ["on-failure"]
    assert entries["Service.EnvironmentFile"] == ["/etc/stockq/stockq.env"]
    assert entries["Service.KillSignal"] == ["SIGTERM"]
    after = " ".join(entries["Unit.After"]).split()
    assert {"network-online.target", "redis-server.service"} <= set(after)
    grace = getattr(args, "shutdown_grace", 0.0)
    assert seconds(entries["Service.TimeoutStopSec"][0]) > grace
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ReadWritePaths", "/var/lib/stockq"), ("PrivateTmp", "yes")):
        assert entries[f"Service.{key}"] == [value], key


def test_systemd_worker_stops_like_a_pool_supervisor() -> None:
    entries = unit(SYSTEMD / "stockq-worker@.service")
    assert entries["Service.KillMode"] == ["mixed"]
    (exec_start,) = entries["Service.ExecStart"]
    grace = stockq_args(shlex.split(exec_start)[1:]).shutdown_grace
    assert grace == WORKER_DEFAULT_GRACE
    assert seconds(entries["Service.TimeoutStopSec"][0]) >= 2 * grace
