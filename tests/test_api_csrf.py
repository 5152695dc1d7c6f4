"""Cross-site requests against a real ``stockq api``: a web page on another site, open
in the operator's browser, must not create, cancel or retry anything through the
sidecar on 127.0.0.1; the bearer scheme is matched in any case.  Each attack is sent as
the browser would send it, and Redis is checked afterwards: nothing was created, the
task was not cancelled."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.query_command import _call
from tests.api_support import assert_error_shape
from tests.api_support import store as store  # fixture
from tests.sidecar_support import (
    GOOD_TOKEN,
    Answer,
    Sidecar,
    running_sidecar,
    sidecar_env,
    task_keys,
)

EVIL = "http://evil.example"
ALLOWED = "https://dashboard.example"
SUBMIT = json.dumps({"plugin_name": "noop", "params": {"n": 1}})


@pytest.fixture(scope="module")
def sidecar(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    env = sidecar_env(redis_server.url, STOCKQ_API_CORS_ORIGINS=ALLOWED)
    with running_sidecar(env, tmp_path_factory.mktemp("csrf") / "api.log") as running:
        yield running


@pytest.fixture
def clean(redis_url: str, sidecar: Sidecar) -> Sidecar:
    """The module's sidecar on an emptied database."""
    return sidecar


def refused(answer: Answer, status: int, code: str) -> str:
    assert answer.status == status, answer
    assert_error_shape(answer.body)
    assert answer.body["error"]["code"] == code, answer.body
    return str(answer.body["error"]["message"])


def submit(sidecar: Sidecar, **headers: str) -> Answer:
    return sidecar.request("POST", "/api/v1/tasks", SUBMIT, **headers)


def test_the_text_plain_attack_creates_nothing(clean: Sidecar, store: redis.Redis) -> None:
    """curl -X POST -H 'Origin: http://evil.example' -H 'Content-Type: text/plain'
    .../api/v1/tasks -d '{"plugin_name": ...}' (a page's fetch with mode no-cors)."""
    message = refused(submit(clean, Origin=EVIL, Content_Type="text/plain"), 403,
                      "cross_origin_refused")
    assert EVIL in message and "STOCKQ_API_CORS_ORIGINS" in message
    assert task_keys(store) == []


def test_the_form_attack_creates_nothing(clean: Sidecar, store: redis.Redis) -> None:
    """An auto-submitted HTML form: url-encoded, the JSON hidden in a field name."""
    form = f"{SUBMIT}=".encode()
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; "
                         "boundary=x", "text/plain"):
        answer = clean.request("POST", "/api/v1/tasks", form, Origin=EVIL,
                               Content_Type=content_type)
        refused(answer, 403, "cross_origin_refused")
        answer = clean.request("POST", "/api/v1/executions", form, Origin="null",
                               Content_Type=content_type)
        refused(answer, 403, "cross_origin_refused")
    assert task_keys(store) == []


def test_a_non_json_body_is_refused_without_an_origin_too(clean: Sidecar,
                                                          store: redis.Redis) -> None:
    """A browser that sends no Origin (older ones, on a form post) still cannot send a
    JSON content type without a preflight: the media type stops it."""
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content_Type": content_type} if content_type else {}
        answer = clean.request("POST", "/api/v1/tasks", SUBMIT, **headers)
        message = refused(answer, 415, "unsupported_media_type")
        assert "application/json" in message
    # a body-less change with a form's content type is refused as well
    refused(clean.request("POST", "/api/v1/schedules/daily_sync/run",
                          Content_Type="application/x-www-form-urlencoded"),
            415, "unsupported_media_type")
    assert task_keys(store) == []


def test_a_cross_origin_cancel_and_retry_change_nothing(clean: Sidecar,
                                                       store: redis.Redis) -> None:
    created = submit(clean, Content_Type="application/json")
    assert created.status == 202, created.body
    task_id = created.body["task_id"]
    for action in ("cancel", "retry"):
        answer = clean.request("POST", f"/api/v1/tasks/{task_id}/{action}", Origin=EVIL)
        refused(answer, 403, "cross_origin_refused")
    assert store.hget(f"stock:task:{task_id}", "status") == "pending"
    assert task_keys(store) == [f"stock:task:{task_id}"]
    # the same body-less cancel without an Origin (curl, scripts) works
    answer = clean.request("POST", f"/api/v1/tasks/{task_id}/cancel")
    assert answer.status == 200 and answer.body["outcome"] == "cancelled", answer.body
    assert store.hget(f"stock:task:{task_id}", "status") == "cancelled"


def test_same_origin_and_allowed_origins_still_work(clean: Sidecar,
                                                   store: redis.Redis) -> None:
    port = clean.port
    for n, headers in enumerate(({"Origin": clean.origin},
                                 {"Origin": f"http://localhost:{port}",
                                  "Host": f"LocalHost:{port}"},
                                 {"Origin": ALLOWED}, {})):
        body = json.dumps({"plugin_name": "noop", "params": {"n": n}})
        answer = clean.request("POST", "/api/v1/tasks", body,
                               Content_Type="application/json; charset=utf-8", **headers)
        assert answer.status == 202 and answer.body["created"], (headers, answer.body)
        if headers.get("Origin") == ALLOWED:
            assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert len(task_keys(store)) == 4
    # another port of the same host is another origin
    refused(submit(clean, Origin=f"http://127.0.0.1:{port + 1}",
                   Content_Type="application/json"), 403, "cross_origin_refused")
    # reads are not changes: a foreign Origin gets its answer, without CORS headers
    read = clean.request("GET", "/api/v1/tasks", Origin=EVIL)
    assert read.status == 200 and "Access-Control-Allow-Origin" not in read.headers


def test_the_cli_http_client_still_works(clean: Sidecar, store: redis.Redis,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``stockq query`` and ``stockq history`` send: JSON, no Origin."""
    for name in [n for n in os.environ if n.startswith("STOCKQ_")]:
        monkeypatch.delenv(name)

    code, task = _call(argparse.Namespace(url=clean.origin), "/api/v1/tasks",
                       {"plugin_name": "noop"})
    assert code == 0 and task["created"] is True
    assert task_keys(store) == [f"stock:task:{task['task_id']}"]


def test_the_bearer_scheme_is_case_insensitive(redis_url: str, tmp_path: Path,
                                               store: redis.Redis) -> None:
    env = sidecar_env(redis_url, STOCKQ_API_TOKEN=GOOD_TOKEN)
    with running_sidecar(env, tmp_path / "api.log") as sidecar:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            answer = sidecar.request("GET", "/api/v1/plugins",
                                     Authorization=f"{scheme} {GOOD_TOKEN}")
            assert answer.status == 200, (scheme, answer.body)
        for wrong in (f"Bearer {GOOD_TOKEN[:-1]}", f"bearer {GOOD_TOKEN}x", GOOD_TOKEN,
                      f"Basic {GOOD_TOKEN}", f"Bearer{GOOD_TOKEN}", "bearer", ""):
            answer = sidecar.request("GET", "/api/v1/plugins", Authorization=wrong)
            refused(answer, 401, "unauthorized")
            assert GOOD_TOKEN not in json.dumps(answer.body)
        # bytes that are not UTF-8 in the header: refused, not a 500
        status, body = sidecar.raw(b"GET /api/v1/plugins HTTP/1.1\r\nHost: x\r\n"
                                   b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
        assert status == 401 and body["error"]["code"] == "unauthorized"
        # with a token, a cross-origin change is refused even when it carries the token
        answer = submit(sidecar, Origin=EVIL, Content_Type="application/json",
                        Authorization=f"bearer {GOOD_TOKEN}")
        refused(answer, 403, "cross_origin_refused")
        answer = submit(sidecar, Content_Type="application/json",
                        Authorization=f"BEARER {GOOD_TOKEN}")
        assert answer.status == 202
    assert len(task_keys(store)) == 1
