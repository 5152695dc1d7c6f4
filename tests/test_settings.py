"""Settings from the environment, the key prefix, the plugin registry, and the Lua
scripts on fakeredis."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import fakeredis.aioredis
import pytest
import redis.asyncio as aioredis
from redis.connection import parse_url

from app import queries
from app.errors import ConfigError, UnknownPlugin
from app.executions import BatchTask, create_execution
from app.models import TaskSpec, TaskStatus
from app.queue import TaskQueue
from app.settings import Settings, load_settings, redact_url, setting_names
from plugins_bridge.registry import PluginRegistry, load_spec
from tests.conftest import EXAMPLES, FakeClock

H = "tests.helpers_plugins"


# ------------------------------------------------------------------ defaults
def test_defaults() -> None:
    s = load_settings(environ={})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.key_prefix == "stock"
    assert s.redis_enabled is True
    assert s.plugins == ()
    assert s.redis_connect_timeout == 2.0
    assert (s.default_timeout_seconds, s.default_max_attempts) == (3600, 3)
    assert s.lease_seconds == 30.0 and s.retention_seconds == 7 * 86400
    assert (s.log_level, s.log_format) == ("info", "auto")
    assert s == Settings(data_dir=s.data_dir)
    assert "redis_url" in setting_names() and "key_prefix" in setting_names()


def test_only_the_given_mapping_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKQ_KEY_PREFIX", "from_process_env")
    assert load_settings(environ={}).key_prefix == "stock"
    assert load_settings().key_prefix == "from_process_env"


# ------------------------------------------------------------------ Redis switches
@pytest.mark.parametrize("name", ["STOCKQ_REDIS_ENABLED", "REDIS_ENABLED"])
@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), (" on ", True),
     ("false", False), ("False", False), ("0", False), ("no", False), ("off", False)],
)
def test_redis_enabled(name: str, raw: str, expected: bool) -> None:
    assert load_settings({name: raw}).redis_enabled is expected


@pytest.mark.parametrize(
    ("new", "legacy", "expected"),
    [("true", "false", True), ("false", "true", False)],
)
def test_new_enabled_name_wins_over_legacy(new: str, legacy: str, expected: bool) -> None:
    env = {"STOCKQ_REDIS_ENABLED": new, "REDIS_ENABLED": legacy}
    assert load_settings(env).redis_enabled is expected


def test_legacy_host_port_password_db_build_the_url() -> None:
    s = load_settings({"REDIS_HOST": "cache.internal", "REDIS_PORT": "6380",
                       "REDIS_PASSWORD": "p@ss:w/rd", "REDIS_DB": "2"})
    assert s.redis_url == "redis://:p%40ss%3Aw%2Frd@cache.internal:6380/2"
    # redis-py reads back exactly what the old variables said
    assert parse_url(s.redis_url) == {"host": "cache.internal", "port": 6380,
                                      "password": "p@ss:w/rd", "db": 2}
    assert "p@ss" not in s.redis_url_redacted and "p%40ss" not in s.redis_url_redacted
    assert s.redis_url_redacted == "redis://:***@cache.internal:6380/2"


def test_legacy_defaults_and_precedence() -> None:
    # db 1, as stock_datasource's producers use it without REDIS_DB
    assert load_settings({"REDIS_HOST": "h"}).redis_url == "redis://h:6379/1"
    # port/db alone do nothing without a host
    assert load_settings({"REDIS_PORT": "7000"}).redis_url == "redis://127.0.0.1:6379/0"
    env = {"STOCKQ_REDIS_URL": "redis://new:1234/3", "REDIS_HOST": "old"}
    assert load_settings(env).redis_url == "redis://new:1234/3"
    assert load_settings({"STOCKQ_REDIS_URL": "unix:///run/redis.sock?db=1"}).redis_url \
        == "unix:///run/redis.sock?db=1"


# ------------------------------------------------------------------ bad values
@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"STOCKQ_REDIS_ENABLED": "maybe"}, "STOCKQ_REDIS_ENABLED='maybe' is not a boolean"),
        ({"REDIS_ENABLED": "nope"}, "REDIS_ENABLED='nope' is not a boolean"),
        ({"STOCKQ_REDIS_URL": "http://h:1/0"}, "must start with redis://"),
        ({"STOCKQ_REDIS_URL": "redis://h:notaport/0"}, "is malformed"),
        ({"STOCKQ_REDIS_URL": "redis://h:99999/0"}, "is malformed"),
        ({"REDIS_HOST": "h", "REDIS_PORT": "abc"}, "REDIS_PORT='abc'"),
        ({"REDIS_HOST": "h", "REDIS_DB": "one"}, "REDIS_DB='one'"),
        ({"REDIS_HOST": "h:1"}, "REDIS_HOST='redis://h:1:6379/1' is malformed"),
        ({"STOCKQ_KEY_PREFIX": ""}, "STOCKQ_KEY_PREFIX"),
        ({"STOCKQ_KEY_PREFIX": "my prefix"}, "STOCKQ_KEY_PREFIX"),
        ({"STOCKQ_LOG_LEVEL": "loud"}, "STOCKQ_LOG_LEVEL"),
        ({"STOCKQ_LOG_FORMAT": "xml"}, "STOCKQ_LOG_FORMAT"),
        ({"STOCKQ_DEFAULT_TIMEOUT": "1.5"}, "STOCKQ_DEFAULT_TIMEOUT='1.5' is not a int"),
        ({"STOCKQ_DEFAULT_TIMEOUT": "0"}, "must be at least 1"),
        ({"STOCKQ_LEASE_SECONDS": "soon"}, "STOCKQ_LEASE_SECONDS='soon' is not a float"),
        ({"STOCKQ_LEASE_SECONDS": "nan"}, "must be a finite number"),
        ({"STOCKQ_REDIS_TIMEOUT": "inf"}, "must be a finite number"),
        ({"STOCKQ_RETRY_BASE_SECONDS": "-1"}, "must be at least 0"),
        ({"STOCKQ_RETENTION_DAYS": "0"}, "STOCKQ_RETENTION_DAYS"),
        ({"STOCKQ_DEFAULT_MAX_ATTEMPTS": "9", "STOCKQ_MAX_ATTEMPTS_LIMIT": "5"},
         "exceeds STOCKQ_MAX_ATTEMPTS_LIMIT"),
    ],
)
def test_bad_values_raise_config_error(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert needle in info.value.message
    assert info.value.code == "config_error"


def test_config_error_never_shows_the_password() -> None:
    for env in ({"STOCKQ_REDIS_URL": "http://user:s3cret@h:1/0"},
                {"STOCKQ_REDIS_URL": "redis://:s3cret@h:bad/0"}):
        with pytest.raises(ConfigError) as info:
            load_settings(env)
        assert "s3cret" not in info.value.message and "***" in info.value.message


def test_numbers_and_lists() -> None:
    s = load_settings({
        "STOCKQ_LEASE_SECONDS": "45.5", "STOCKQ_RETENTION_DAYS": "2",
        "STOCKQ_DEFAULT_TIMEOUT": "90", "STOCKQ_REDIS_TIMEOUT": "0.5",
        "STOCKQ_PLUGINS": " a.b:C , ,d.e:F,", "STOCKQ_LOG_LEVEL": " DEBUG ",
        "STOCKQ_LOG_FORMAT": "console", "STOCKQ_DATA_DIR": "~/q",
    })
    assert s.lease_seconds == 45.5 and s.retention_seconds == 2 * 86400
    assert s.default_timeout_seconds == 90 and isinstance(s.default_timeout_seconds, int)
    assert math.isclose(s.redis_connect_timeout, 0.5)
    assert s.plugins == ("a.b:C", "d.e:F")
    assert (s.log_level, s.log_format) == ("debug", "console")
    assert not str(s.data_dir).startswith("~") and s.data_dir.name == "q"
    # empty values mean "not set"
    assert load_settings({"STOCKQ_PLUGINS": "", "STOCKQ_LEASE_SECONDS": ""}) \
        == load_settings({})


# ------------------------------------------------------------------ redact_url
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:secret@h:6379/0", "redis://user:***@h:6379/0"),
        ("rediss://user:p%40ss@h/1", "rediss://user:***@h/1"),
        ("redis://user@h:6379/0", "redis://user@h:6379/0"),  # no password, nothing to hide
        ("redis://:secret@[::1]:6380/0", "redis://:***@[::1]:6380/0"),
        ("redis://:secret@h:notaport/0", "redis://:***@h:notaport/0"),
        ("unix:///tmp/r.sock?db=1&password=secret", "unix:///tmp/r.sock?db=1&password=***"),
        ("redis://h/0?Password=secret", "redis://h/0?Password=***"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "secret" not in redact_url(url)


# ------------------------------------------------------------------ key prefix
async def test_key_prefix_changes_every_key(redis_url: str, client: aioredis.Redis,
                                            clock: FakeClock) -> None:
    settings = load_settings({"STOCKQ_REDIS_URL": redis_url, "STOCKQ_KEY_PREFIX": "alt",
                              "STOCKQ_LEASE_SECONDS": "30"})
    q = TaskQueue(client, settings, clock=clock, rng=lambda: 0.0)

    def spec(n: int, **kw: Any) -> TaskSpec:
        return TaskSpec.build("noop", params={"n": n}, **kw)

    done, _ = await q.enqueue(spec(1, priority="high"))
    retried, _ = await q.enqueue(spec(2, priority="low"))
    cancelled, _ = await q.enqueue(spec(3))
    assert await q.enqueue(spec(3)) == (cancelled, False)  # dedup key under the prefix
    eid, (first, second) = await create_execution(
        q, [BatchTask(spec(4)), BatchTask(spec(5), depends_on=(0,))])

    t = await q.claim("w")
    assert t is not None and t.task_id == done
    assert await q.progress(t, 50, 1) is False
    await q.complete(t)
    await q.cancel(cancelled)
    new_id = await q.retry(cancelled)
    t = await q.claim("w")
    assert t is not None
    assert (await q.renew({t.task_id: t.lease_token})).lost == []
    outcome = await q.fail(t, "network", "down")
    assert outcome.status == TaskStatus.RETRYING
    assert await client.zrange("alt:delayed", 0, -1) == [t.task_id]
    t = await q.claim("w")
    assert t is not None
    clock.advance(31)  # lease expired
    assert await q.reap() == [(t.task_id, "requeued")]
    t = await q.claim("w")
    assert t is not None
    await q.requeue(t)
    assert await q.claim("w") is not None  # one stays running, under a lease
    stats = await queries.queue_stats(q)
    assert stats.by_status["completed"] == 1 and stats.by_status["cancelled"] == 1
    assert [x.task_id for x in (await queries.list_tasks(q, status="cancelled")).items] \
        == [cancelled]
    assert (await queries.get_execution(q, eid)).total == 2

    keys = await client.keys("*")
    assert keys and all(k.startswith("alt:") for k in keys), keys
    for expected in ("alt:leases", "alt:running_tasks", "alt:stats", "alt:doorbell",
                     "alt:index:all", f"alt:task:{done}", f"alt:execution:{eid}",
                     f"alt:execution:{eid}:tasks", f"alt:task:{first}",
                     "alt:index:executions", "alt:index:plugin:noop"):
        assert expected in keys, expected
    assert {retried, new_id, second} <= {k.split(":")[2] for k in keys if k.count(":") == 2}

    # a queue with the default prefix sees none of it
    default = TaskQueue(client, Settings(redis_url=redis_url), clock=clock)
    assert await default.claim("w") is None
    assert (await queries.queue_stats(default)).by_status["pending"] == 0
    assert all(k.startswith("alt:") for k in await client.keys("*"))

    clock.advance(8 * 86400)  # past retention: cleanup uses the prefix too
    assert (await q.cleanup())[0] >= 2
    await q.aclose()
    await default.aclose()


# ------------------------------------------------------------------ plugin registry
def test_registry_loads_instances_classes_and_lists() -> None:
    reg = PluginRegistry.load([EXAMPLES, f"{H}:LOUDER", f"{H}:DUCKS"], use_entry_points=False)
    assert reg.names() == ["duck", "fail", "louder", "noop", "sleep"]
    assert "louder" in reg and "missing" not in reg
    assert reg.describe("louder")["default_timeout_seconds"] == 120
    assert reg.describe("fail")["default_max_attempts"] == 1


def test_later_sources_replace_earlier_ones() -> None:
    reg = PluginRegistry.load([EXAMPLES, f"{H}:REPLACEMENT"], use_entry_points=False)
    assert reg.get("noop").description == "replacement"  # type: ignore[attr-defined]


def test_unknown_plugin_names_the_known_ones() -> None:
    reg = PluginRegistry.load([EXAMPLES], use_entry_points=False)
    with pytest.raises(UnknownPlugin) as info:
        reg.get("nope")
    assert info.value.known == ["fail", "noop", "sleep"]
    assert "fail, noop, sleep" in info.value.message
    with pytest.raises(UnknownPlugin) as info:
        PluginRegistry().get("x")
    assert "none are registered" in info.value.message


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("no_colon", "must look like module:attr"),
        (":attr", "must look like module:attr"),
        ("module:", "must look like module:attr"),
        ("no_such_module_xyz:P", "cannot import no_such_module_xyz"),
        (f"{H}:MISSING", "has no 'MISSING'"),
        (f"{H}:NOT_A_PLUGIN", "is not a plugin"),
        (f"{H}:NUMBER", "is not a plugin"),
        (f"{H}:NAMELESS", "is not a plugin"),
        (f"{H}:NOT_RUNNABLE", "is not a plugin"),
        (f"{H}:MIXED", "is not a plugin"),
        (f"{H}:EXPLODING", "cannot be created: needs a token"),
    ],
)
def test_bad_plugin_specs_raise_config_error(spec: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    assert needle in info.value.message
    with pytest.raises(ConfigError):
        PluginRegistry.load([EXAMPLES, spec], use_entry_points=False)


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: Any

    def load(self) -> Any:
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


def test_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import helpers_plugins as hp

    groups: list[str] = []

    def fake(eps: list[FakeEntryPoint]) -> Any:
        def entry_points(*, group: str) -> list[FakeEntryPoint]:
            groups.append(group)
            return eps
        return entry_points

    monkeypatch.setattr("plugins_bridge.registry.entry_points",
                        fake([FakeEntryPoint("duck", "x:Duck", hp.Duck)]))
    assert PluginRegistry.load().names() == ["duck"]
    assert groups == ["stockq.plugins"]
    assert PluginRegistry.load(use_entry_points=False).names() == []

    monkeypatch.setattr("plugins_bridge.registry.entry_points",
                        fake([FakeEntryPoint("broken", "x:Y", ImportError("no module x"))]))
    with pytest.raises(ConfigError) as info:
        PluginRegistry.load()
    assert "entry point broken (x:Y) failed: no module x" in info.value.message

    monkeypatch.setattr("plugins_bridge.registry.entry_points",
                        fake([FakeEntryPoint("bad", "x:Z", object())]))
    with pytest.raises(ConfigError) as info:
        PluginRegistry.load()
    assert "entry point bad is not a plugin" in info.value.message


# ------------------------------------------------------------------ fakeredis
async def test_scripts_run_on_fakeredis() -> None:
    """The Lua transitions only use what fakeredis[lua] implements (cjson included)."""
    fake = fakeredis.aioredis.FakeRedis(decode_responses=True)
    clock = FakeClock()
    q = TaskQueue(fake, Settings(), clock=clock, rng=lambda: 0.0)
    try:
        low, created = await q.enqueue(TaskSpec.build("noop", params={"n": 1}, priority="low"))
        high, _ = await q.enqueue(TaskSpec.build("noop", params={"n": 2}, priority="high",
                                                 trade_dates=["2024-01-02"]))
        assert created and await q.enqueue(TaskSpec.build("noop", params={"n": 1})) \
            == (low, False)

        t = await q.claim("w-1", "tok-1")
        assert t is not None and t.task_id == high
        assert t.status == TaskStatus.RUNNING and t.attempt == 1 and t.lease_token == "tok-1"
        assert await fake.zscore("stock:leases", high) == clock.now * 1000 + 30_000
        clock.advance(2)
        await q.complete(t, records=5, result={"ok": True})
        done = await q.get(high)
        assert done.status == TaskStatus.COMPLETED and done.records_processed == 5
        assert done.result == {"ok": True} and done.duration_ms == 2000
        assert done.trade_dates == ["20240102"]
        assert await fake.scard("stock:running_tasks") == 0
        assert await fake.zcard("stock:leases") == 0

        t = await q.claim("w-1")
        assert t is not None and t.task_id == low
        out = await q.fail(t, "network", "reset")
        assert out.status == TaskStatus.RETRYING and out.attempt == 1
        assert await q.claim("w-1") is None
        assert await fake.hgetall("stock:stats") == {
            "enqueued": "2", "completed": "1", "completed:noop": "1",
            "retried": "1", "retried:noop": "1",
            "duration_bucket:5": "1", "duration_bucket:0.1": "1",
            "duration_sum_ms": "2000",
        }
    finally:
        await fake.aclose()
