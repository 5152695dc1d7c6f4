"""No stored secret leaves stockq (DESIGN §4, §8): the redactor itself, the log
pipeline, the task transitions, the audit flusher, and the whole path for real — a
plugin in a real worker child whose exception, failed result, progress, result and
output hold the TuShare token, the API token, the proxy password and the ClickHouse
password; none of them may reach Redis, the worker's log, the ClickHouse audit row or
the sidecar's answers, and ``***`` shows where the text was kept otherwise."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import structlog
from aiohttp.test_utils import TestClient, TestServer

import app.logs
from app.api.app import create_app
from app.audit import AuditFlusher
from app.logs import configure_logging, get_logger
from app.models import TaskSpec
from app.queue import TaskQueue
from app.redaction import (
    MASK,
    MIN_SECRET_LENGTH,
    Redactor,
    StreamRedactor,
    redactor_for,
    settings_secrets,
)
from app.settings import Settings, load_settings
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.warehouse import Warehouse
from tests.redis_server import free_port
from tests.workers import WorkerProcess, wait_until, worker_env

pytestmark = pytest.mark.timeout(120)

TOKEN = "7f3c9a1e5b2d4c6e8a0b1d3f5e7c9a2b4d6f8e0a1c3e5b7d9f2a4c6e"  # TuShare's shape
API_TOKEN = "apitok-c0ffee4b1d2e3f4a5b6c"
PROXY_PASSWORD = "hunter2/pw!zz"  # percent-encoded in its URL
PROXY_URL = "http://squid:hunter2%2Fpw%21zz@127.0.0.1:9"
CH_PASSWORD = "ch-pa55w0rd-77"
STRANGER = "opensesame"  # someone else's URL password: masked by the URL rule
SECRETS = (TOKEN, API_TOKEN, PROXY_PASSWORD, "hunter2%2Fpw%21zz", CH_PASSWORD, STRANGER)


def assert_clean(text: str, where: str) -> None:
    """None of the secrets, nor a 12-character piece of a token (a secret cut in two
    by a length limit), is in ``text``."""
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {where}: {text[:3000]}"
    for token in (TOKEN, API_TOKEN):
        for i in range(len(token) - 11):
            assert token[i:i + 12] not in text, f"a piece of a token leaked into {where}"


# ------------------------------------------------------------------ the redactor
def test_url_passwords_are_masked_whoever_they_belong_to() -> None:
    r = Redactor()
    assert r("GET via http://bob:hunter2@proxy.example:3128 failed") == \
        "GET via http://bob:***@proxy.example:3128 failed"
    assert r("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert r("redis://:p@ss@h/0") == "redis://:***@h/0"  # the last @ ends it, as urllib reads it
    assert r("socks5h://u:x%2Fy@h:1080 and https://a:b@c/d") == \
        "socks5h://u:***@h:1080 and https://a:***@c/d"
    assert r('{"url": "http://u:pw@h"}') == '{"url": "http://u:***@h"}'
    # no password: nothing to mask (a port, a path with an @, a user alone)
    for text in ("http://host:8080/path/u@x.com", "http://user@host/", "mailto:a@b.c",
                 "see https://example.com:443/x"):
        assert r(text) == text


def test_several_secrets_and_their_spellings() -> None:
    r = Redactor(["tok-ABCDEF123", "p@ss w/rd", 'q"uote\\d'])
    assert r("token tok-ABCDEF123 and tok-ABCDEF123.") == "token *** and ***."
    assert r("p@ss w/rd, p%40ss%20w%2Frd") == "***, ***"  # as written, percent encoded
    assert r(json.dumps({"e": 'q"uote\\d'}, ensure_ascii=False)) == '{"e": "***"}'  # JSON
    assert r("nothing here") == "nothing here"


def test_overlapping_and_nested_secrets_leave_no_fragment() -> None:
    r = Redactor(["abcdefgh", "efghijkl", "cdef-xyz-outer", "xyz-ou"])
    assert r("__abcdefghijkl__") == "__***__"  # overlap: one span
    assert r("__abcdefghefghijkl__") == "__***__"  # adjacent
    assert r("<cdef-xyz-outer>") == "<***>"  # one inside the other
    assert r("abcdefgh efghijkl") == "*** ***"


def test_short_secrets_are_not_searched_for_but_masked_in_urls() -> None:
    r = Redactor(["x", "abcde", "abcdef"])
    assert MIN_SECRET_LENGTH == 6
    assert r("x marks the spot; abcde") == "x marks the spot; abcde"  # would mangle text
    assert r("abcdef") == MASK  # the minimum length is searched for
    assert r("redis://:x@h/0") == "redis://:***@h/0"  # still masked inside a URL
    assert Redactor(["tinypw"], min_length=8)("tinypw") == "tinypw"


def test_a_text_without_secrets_is_returned_as_it_is() -> None:
    r = Redactor([TOKEN, API_TOKEN])
    line = '{"event": "task.completed", "records": 1, "task_id": "a1"}'
    assert r(line) is line  # the fast path: no copy
    assert Redactor()(line) is line
    assert r("") == ""
    assert TOKEN not in repr(r) and "Redactor(" in repr(r)


def test_every_stored_secret_of_the_settings_is_known() -> None:
    settings = load_settings({
        "REDIS_HOST": "redis.internal", "REDIS_PASSWORD": "r3dis pw/x",
        "HTTP_PROXY_ENABLED": "true", "HTTP_PROXY_HOST": "proxy", "HTTP_PROXY_PORT": "3128",
        "HTTP_PROXY_USERNAME": "u", "HTTP_PROXY_PASSWORD": "pr0xy@pw",
        "TUSHARE_TOKEN": TOKEN, "STOCKQ_API_TOKEN": API_TOKEN,
        "STOCKQ_CLICKHOUSE_URL": f"http://default:{CH_PASSWORD}@ch:8123/db?password=qpass-9",
    })
    found = settings_secrets(settings)
    for secret in (TOKEN, API_TOKEN, CH_PASSWORD, "qpass-9"):
        assert secret in found
    r = redactor_for(settings)
    text = (f"r3dis pw/x pr0xy@pw {TOKEN} {API_TOKEN} {CH_PASSWORD} qpass-9 "
            f"{settings.redis_url} {settings.http_proxy} {settings.clickhouse_url}")
    masked = r(text)
    for secret in ("r3dis pw/x", "r3dis%20pw%2Fx", "pr0xy@pw", "pr0xy%40pw", TOKEN, API_TOKEN,
                   CH_PASSWORD, "qpass-9"):
        assert secret not in masked, masked
    assert masked.startswith("*** *** *** ***")
    assert "redis://:***@redis.internal:6379/1" in masked
    assert redactor_for(settings) is r  # built once per settings
    assert Redactor.from_settings(Settings()).needles == ()  # nothing stored: nothing sought


def test_a_stream_masks_a_secret_cut_between_reads() -> None:
    s = StreamRedactor(Redactor([TOKEN]), max_line=300)
    out = [s.feed("start " + TOKEN[:20]), s.feed(TOKEN[20:] + " end\nnext "),
           s.feed(TOKEN[:5]), s.feed(TOKEN[5:]), s.close()]
    assert out[0] == ""  # a line is passed on when it completes
    assert out[1] == "start *** end\n"
    assert "".join(out) == "start *** end\nnext ***"
    # a line longer than max_line without a break: passed on in pieces, still masked
    s = StreamRedactor(Redactor([TOKEN]), max_line=300)
    pieces = [s.feed(f"word{i} ") for i in range(100)] + [s.feed(TOKEN[:30])]
    pieces += [s.feed(TOKEN[30:] + " tail"), s.close()]
    joined = "".join(pieces)
    assert any(pieces[:-1]) and TOKEN not in joined and joined.endswith("*** tail")
    assert_clean(joined, "a long streamed line")


# ------------------------------------------------------------------ logs
SECRET_SETTINGS = Settings(tushare_token=TOKEN, api_token=API_TOKEN, http_proxy=PROXY_URL,
                           clickhouse_url=f"http://default:{CH_PASSWORD}@ch:8123")


@pytest.fixture(params=["json", "console"])
def secret_log(request: pytest.FixtureRequest,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """structlog configured with the secret settings into a buffer (then restored)."""
    saved, was = structlog.get_config(), app.logs._configured
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging(replace(SECRET_SETTINGS, log_format=request.param), force=True)
    yield buffer
    structlog.configure(**saved)
    app.logs._configured = was


def test_every_string_of_a_log_line_is_redacted(secret_log: io.StringIO) -> None:
    log = get_logger("test.secrets")
    text = f"token {TOKEN} proxy {PROXY_URL} pw {PROXY_PASSWORD} ch {CH_PASSWORD}"
    log.warning("task.failed", error=text, nested={"items": [text, API_TOKEN]},
                url="https://alice:opensesame@db.example/")
    try:
        raise RuntimeError(text)
    except RuntimeError:
        log.exception("worker.slot_error", error="boom")
    write = log.prepare("info", "task.enqueued", reason=text)  # the producer's path
    assert write is not None
    write()
    out = secret_log.getvalue()
    assert_clean(out, "the log")
    assert out.count("task.failed") == 1 and "Traceback" in out and "RuntimeError" in out
    assert "token ***" in out and "squid:***@127.0.0.1:9" in out and "alice:***@db" in out


def test_records_of_the_logging_module_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """What aiohttp, APScheduler or a plugin log with the standard library: through the
    last-resort handler (no handler configured) and through a root handler."""
    saved, was = structlog.get_config(), app.logs._configured
    stderr, handled = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    text = f"token {TOKEN} via {PROXY_URL}"
    try:
        configure_logging(SECRET_SETTINGS, force=True)
        try:
            raise RuntimeError(text)
        except RuntimeError:
            logging.getLogger("apscheduler.executors").exception("job %s failed", text)
        root = logging.StreamHandler(handled)
        monkeypatch.setattr(logging.getLogger(), "handlers", [root])
        configure_logging(SECRET_SETTINGS, force=True)
        logging.getLogger("aiohttp.server").error("stdlib %s", text)
    finally:
        structlog.configure(**saved)
        app.logs._configured = was
    for out in (stderr.getvalue(), handled.getvalue()):
        assert_clean(out, "a logging module record")
    assert "job token *** via http://squid:***@127.0.0.1:9 failed" in stderr.getvalue()
    assert "RuntimeError: token ***" in stderr.getvalue()  # the traceback
    assert "stdlib token ***" in handled.getvalue()


def test_secret_named_keys_are_still_masked(secret_log: io.StringIO) -> None:
    get_logger("test.secrets").info("api.started", password="short", api_key="k")
    out = secret_log.getvalue()
    assert "short" not in out and "api.started" in out


# ------------------------------------------------------------------ transitions
@pytest.fixture
def secret_settings(settings: Settings) -> Settings:
    return replace(settings, tushare_token=TOKEN, api_token=API_TOKEN, http_proxy=PROXY_URL,
                   clickhouse_url=f"http://default:{CH_PASSWORD}@ch:8123")


@pytest.fixture
async def secret_queue(client: aioredis.Redis,
                       secret_settings: Settings) -> AsyncIterator[TaskQueue]:
    q = TaskQueue(client, secret_settings)
    yield q
    await q.aclose()


def dump_redis(url: str) -> str:
    """Every key and value of the database, as one text."""
    r = redis.Redis.from_url(url, decode_responses=True)
    out = []
    try:
        read: dict[str, Any] = {"string": r.get, "hash": r.hgetall, "set": r.smembers,
                                "zset": lambda k: r.zrange(k, 0, -1, withscores=True),
                                "list": lambda k: r.lrange(k, 0, -1)}
        for key in r.scan_iter(count=1000):
            kind = r.type(key)
            out.append(f"{key} {kind} {read[kind](key) if kind in read else ''!r}")
    finally:
        r.close()
    return "\n".join(out)


async def test_no_transition_stores_a_secret(secret_queue: TaskQueue, redis_url: str) -> None:
    text = f"token {TOKEN} via {PROXY_URL} ({PROXY_PASSWORD}) ch {CH_PASSWORD} {API_TOKEN}"
    q = secret_queue
    ids = [(await q.enqueue(TaskSpec.build("noop", params={"n": n}, max_attempts=1)))[0]
           for n in range(4)]
    a, b, c = [await q.claim("w") for _ in range(3)]
    assert a is not None and b is not None and c is not None
    assert not await q.progress(a, 10, 1, "x" * 480 + text, checkpoint=text)
    await q.complete(a, 1, {"status": "success", "message": text,
                            "steps": {"fetch": {"error": text}}}, checkpoint=text)
    await q.fail(b, "error", text, checkpoint=text)
    await q.requeue(c, text, checkpoint=text)
    await q.cancel(ids[3], text)
    stored = dump_redis(redis_url)
    assert_clean(stored, "Redis")
    done = await q.get(a.task_id)
    assert done.progress_message.startswith("x" * 480 + "token ***")
    assert "token ***" in json.dumps(done.to_dict()["result"]) and "***" in done.checkpoint
    assert (await q.get(b.task_id)).to_dict()["error_message"].startswith("token ***")


async def test_the_flusher_redacts_rows_written_by_an_older_worker(
        secret_queue: TaskQueue, client: aioredis.Redis, tmp_path: Path) -> None:
    row = ["t1", "1", "", "noop", "incremental", "failed", "error",
           f"leaked {TOKEN} and {CH_PASSWORD}", "0", "[]", "1", "api", "w",
           "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01+00:00",
           "2026-01-01T00:00:02+00:00", "1000", "1767225602000"]
    await client.lpush(secret_queue.keys.audit_tasks, json.dumps(row))
    warehouse = Warehouse(f"chdb://{tmp_path / 'ch'}")
    flusher = AuditFlusher(secret_queue, warehouse)
    try:
        while await flusher.step():
            pass
        rows = warehouse.select("SELECT error_message FROM stockq_task_audit", {})
    finally:
        await flusher.release()
        warehouse.close()
    assert rows == [{"error_message": "leaked *** and ***"}]


# ------------------------------------------------------------------ for real
LEAKS = {"raise": 2, "config": 1, "return": 1, "dates": 1, "ok": 1, "print": 1}  # max_attempts


async def test_a_plugin_leaking_every_secret_through_a_real_worker(
        secret_settings: Settings, secret_queue: TaskQueue, redis_url: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = worker_env(redis_url, STOCKQ_TUSHARE_TOKEN=TOKEN, STOCKQ_API_TOKEN=API_TOKEN,
                     STOCKQ_HTTP_PROXY=PROXY_URL,
                     # a server nobody listens on: the worker starts anyway
                     STOCKQ_CLICKHOUSE_URL=f"http://default:{CH_PASSWORD}@127.0.0.1:"
                                           f"{free_port()}")
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "2")
    try:
        worker.wait_started()
        ids = {}
        for mode, attempts in LEAKS.items():
            dates = ["20260105", "20260106"] if mode == "dates" else None
            ids[mode], _ = await secret_queue.enqueue(TaskSpec.build(
                "leaky", params={"mode": mode}, max_attempts=attempts, trade_dates=dates))
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        wait_until(lambda: all(r.hget(f"stock:task:{tid}", "status") in ("completed", "failed")
                               for tid in ids.values()), 60, "every leaky task to end")
        r.close()
    finally:
        code = worker.stop()
    assert code == 0

    # Redis: every key, the audit outbox included
    stored = dump_redis(redis_url)
    assert_clean(stored, "Redis")
    hashes = {mode: (await secret_queue.get(tid)).to_dict() for mode, tid in ids.items()}
    assert {m: h["status"] for m, h in hashes.items()} == {
        "raise": "failed", "config": "failed", "return": "failed", "dates": "failed",
        "ok": "completed", "print": "completed"}
    for mode in ("raise", "config", "return"):
        assert "TuShare refused token ***" in hashes[mode]["error_message"], hashes[mode]
        assert "squid:***@127.0.0.1" in hashes[mode]["error_message"]
        assert "alice:***@db.example" in hashes[mode]["error_message"]
    assert hashes["dates"]["error_message"].startswith(
        "20260106: RuntimeError: TuShare refused token ***")
    assert hashes["ok"]["progress_message"].startswith("x" * 468 + "TuShare refused token ***")
    assert "***" in json.dumps(hashes["ok"]["result"]) and "***" in hashes["ok"]["checkpoint"]

    # the worker's log: every line, JSON or not, the children's output included
    log_text = worker.log_path.read_text(errors="replace")
    assert_clean(log_text, "the worker's log")
    failed = worker.events("task.failed")
    assert len(failed) == 4 and all("token ***" in e["error"] for e in failed), failed
    assert worker.events("task.retry_scheduled")  # the first attempt of "raise"
    assert "stdlib: TuShare refused token ***" in log_text  # the child's logging module
    assert log_text.count("TuShare refused token ***") >= 10  # print, echo, traceback, ...
    notes = worker.events("plugin.note")
    assert notes and "***" in notes[0]["detail"]

    # ClickHouse: the audit rows, flushed into the embedded engine
    warehouse = Warehouse(f"chdb://{tmp_path / 'ch'}")
    flusher = AuditFlusher(secret_queue, warehouse)
    try:
        while await flusher.step():
            pass
        rows = warehouse.select("SELECT * FROM stockq_task_audit FINAL", {})
        assert len(rows) == 7  # the retry of "raise" has a row of its own
        assert_clean(json.dumps(rows, default=str), "the audit rows")
        assert all("token ***" in row["error_message"] for row in rows
                   if row["status"] in ("failed", "retrying")), rows
        assert_clean(dump_redis(redis_url), "Redis after the flush")

        # the sidecar: the task and the history, as a client reads them
        buffer = io.StringIO()
        monkeypatch.setattr(sys, "stderr", buffer)
        saved, was = structlog.get_config(), app.logs._configured
        configure_logging(replace(secret_settings, log_format="json"), force=True)
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        try:
            async with TestClient(TestServer(create_sidecar(secret_settings, warehouse))) as http:
                answers = []
                for tid in ids.values():
                    resp = await http.get(f"/api/v1/tasks/{tid}", headers=auth)
                    assert resp.status == 200, await resp.text()
                    answers.append(await resp.text())
                resp = await http.get("/api/v1/history?limit=100", headers=auth)
                assert resp.status == 200, await resp.text()
                history = await resp.text()
                # a client that puts a token in a URL: the access log masks it
                await http.get(f"/api/v1/tasks/{TOKEN}", headers=auth)
        finally:
            structlog.configure(**saved)
            app.logs._configured = was
        for answer in answers:
            assert_clean(answer, "GET /api/v1/tasks/{id}")
        assert sum("TuShare refused token ***" in a for a in answers) >= 5
        assert_clean(history, "GET /api/v1/history")
        assert len(json.loads(history)["items"]) == 7 and "token ***" in history
        assert_clean(buffer.getvalue(), "the sidecar's log")
        assert "api.request" in buffer.getvalue()
    finally:
        await flusher.release()
        warehouse.close()


def create_sidecar(settings: Settings, warehouse: Warehouse) -> Any:
    return create_app(settings, registry=PluginRegistry(), warehouse=warehouse)


async def test_error_answers_do_not_echo_a_secret(settings: Settings) -> None:
    """An error message built from what the client sent (an id, a statement) is masked
    like a log line: a client that pastes a token into a URL does not get it back."""
    secret = "tushare-token-" + "9f3c2a71b0d4e85c"
    app = create_app(replace(settings, tushare_token=secret), registry=PluginRegistry())
    async with TestClient(TestServer(app)) as http:
        resp = await http.get(f"/api/v1/tasks/{secret}")
        body = await resp.json()
        assert resp.status == 404 and body["error"]["code"] == "task_not_found"
        assert secret not in json.dumps(body) and "***" in body["error"]["message"]
        resp = await http.post(f"/api/v1/tasks/x-{secret}/cancel")
        body = await resp.json()
        assert resp.status == 404 and secret not in json.dumps(body)
