"""What a real ``stockq api`` answers to requests aiohttp cannot parse (JSON errors, one
log line each, no traceback), and one error code per condition on every route (an
unknown task is ``task_not_found`` wherever it is named, and a NUL in an id does not
cut the message short)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.api.protocol import MAX_FIELD, MAX_HEADERS, MAX_LINE
from tests.api_support import assert_error_shape
from tests.api_support import store as store  # fixture
from tests.sidecar_support import Sidecar, running_sidecar, sidecar_env, task_keys


@pytest.fixture(scope="module")
def sidecar(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    env = sidecar_env(redis_server.url)
    with running_sidecar(env, tmp_path_factory.mktemp("protocol") / "api.log") as running:
        yield running


def request(head: str, *headers: bytes) -> bytes:
    return head.encode() + b"\r\nHost: x\r\n" + b"".join(h + b"\r\n" for h in headers) \
        + b"Connection: close\r\n\r\n"


KEEP_ALIVE_THEN_BAD = (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"G(T /health HTTP/1.1\r\nHost: x\r\n\r\n")
ATTACKS: list[tuple[str, bytes, int, str]] = [
    ("long URL", request(f"GET /{'a' * (MAX_LINE + 10)} HTTP/1.1"), 414, "request line"),
    ("long query", request(f"GET /api/v1/tasks?status={'x' * 20000} HTTP/1.1"), 414,
     "request line"),
    ("long header", request("GET /health HTTP/1.1", b"X-Big: " + b"a" * (MAX_FIELD + 10)),
     431, "header"),
    ("long header name", request("GET /health HTTP/1.1", b"X" * (MAX_FIELD + 10) + b": 1"),
     431, "header"),
    ("many headers", request("GET /health HTTP/1.1",
                             *(f"X-H{i}: 1".encode() for i in range(MAX_HEADERS + 5))),
     431, "headers"),
    ("invalid method", request("G(T /health HTTP/1.1"), 400, "method"),
    ("unknown method", request("FOO /health HTTP/1.1"), 400, "method"),
    ("TLS on the HTTP port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
     400, "TLS"),
    ("bad method after a good request", KEEP_ALIVE_THEN_BAD, 400, "method"),
    ("malformed header", request("GET /health HTTP/1.1", b"Bad Header: x"), 400, "header"),
    ("bad chunked body", b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: "
     b"application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "malformed"),
]


def test_unparseable_requests_get_json_errors_and_one_log_line(
        redis_url: str, tmp_path: Path, store: redis.Redis) -> None:
    """Against a sidecar of its own: its whole log is read after it stopped."""
    with running_sidecar(sidecar_env(redis_url), tmp_path / "api.log") as sidecar:
        before = len(sidecar.events("api.bad_request"))
        for name, data, status, fragment in ATTACKS:
            got, body = sidecar.raw(data)
            if name == "bad method after a good request":
                continue  # two answers on one connection: checked in the log below
            assert got == status, (name, got, body)
            assert_error_shape(body)
            assert body["error"]["code"] == "bad_request", (name, body)
            assert fragment in body["error"]["message"], (name, body)
            assert len(body["error"]["message"]) < 200  # the request is not echoed
        assert sidecar.request("GET", "/health").status == 200  # still serving
    lines = sidecar.log_lines()
    records = [json.loads(line) for line in lines]  # every line is a JSON object
    assert not any("Traceback" in line for line in lines)
    bad = [r for r in records if r["event"] == "api.bad_request"]
    assert len(bad) - before == len(ATTACKS)
    for record in bad:
        assert record["level"] == "warning" and record["component"] == "stockq.api"
        assert record["status"] in (400, 414, 431) and record["error"]
    assert not [r for r in records if r["event"] == "api.server_error"]
    assert task_keys(store) == []


def test_an_unknown_task_is_task_not_found_on_every_route(sidecar: Sidecar,
                                                           redis_url: str) -> None:
    for method, path in (("GET", "/api/v1/tasks/nope"), ("POST", "/api/v1/tasks/nope/cancel"),
                         ("POST", "/api/v1/tasks/nope/retry")):
        answer = sidecar.request(method, path)
        assert answer.status == 404, (path, answer.body)
        assert answer.body["error"]["code"] == "task_not_found", (path, answer.body)
        assert "'nope'" in answer.body["error"]["message"]
    for method, path in (("GET", "/api/v1/executions/nope"),
                         ("POST", "/api/v1/executions/nope/cancel"),
                         ("POST", "/api/v1/executions/nope/retry"),
                         ("GET", "/api/v1/tasks?execution_id=nope")):
        answer = sidecar.request(method, path)
        assert answer.status == 404, (path, answer.body)
        assert answer.body["error"]["code"] == "execution_not_found", (path, answer.body)
    answer = sidecar.request("GET", "/api/v1/no-such-route")
    assert answer.status == 404 and answer.body["error"]["code"] == "not_found"


def test_a_nul_in_an_id_is_shown_whole(sidecar: Sidecar, redis_url: str) -> None:
    shown = repr("ab\x00cd")  # 'ab\x00cd'
    for method, path, code in (
        ("GET", "/api/v1/tasks/ab%00cd", "task_not_found"),
        ("POST", "/api/v1/tasks/ab%00cd/cancel", "task_not_found"),
        ("POST", "/api/v1/tasks/ab%00cd/retry", "task_not_found"),
        ("GET", "/api/v1/executions/ab%00cd", "execution_not_found"),
        ("POST", "/api/v1/executions/ab%00cd/cancel", "execution_not_found"),
        ("POST", "/api/v1/executions/ab%00cd/retry", "execution_not_found"),
        ("POST", "/api/v1/schedules/ab%00cd/run", "schedule_not_found"),
    ):
        answer = sidecar.request(method, path)
        assert answer.status == 404, (path, answer.body)
        assert answer.body["error"]["code"] == code, (path, answer.body)
        assert shown in answer.body["error"]["message"], (path, answer.body)
