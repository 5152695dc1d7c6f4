"""The stock_datasource adapter, against the stand-in package in tests/sds_stub (the
real snapshot runs in tests/test_sds_real.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from plugins_bridge.adapters.stock_datasource import AdaptedPlugin, discover, map_schedule
from plugins_bridge.contract import PluginLike
from plugins_bridge.registry import PluginRegistry
from plugins_bridge.runner import ProxyConfig, run_task

STUB = Path(__file__).resolve().parent / "sds_stub"


def _forget_package() -> None:
    for name in [n for n in sys.modules if n == "stock_datasource"
                 or n.startswith("stock_datasource.")]:
        del sys.modules[name]


@pytest.fixture
def clean_modules() -> Iterator[None]:
    _forget_package()
    yield
    _forget_package()


@pytest.fixture
def sds(clean_modules: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The stand-in package on sys.path for this test only; yields its plugin manager."""
    monkeypatch.syspath_prepend(str(STUB))
    from stock_datasource.core import base_plugin, plugin_manager  # type: ignore[import-not-found]

    base_plugin.CALLS.clear()
    yield plugin_manager.plugin_manager


def _by_name(plugins: list[AdaptedPlugin]) -> dict[str, AdaptedPlugin]:
    return {p.name: p for p in plugins}


def _events(logs: list[MutableMapping[str, Any]], event: str
            ) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


# ------------------------------------------------------------------------ discovery
def test_discover_maps_every_attribute(sds: Any) -> None:
    plugins = _by_name(discover())
    assert sorted(plugins) == ["tushare_adj_factor", "tushare_daily"]

    daily = plugins["tushare_daily"]
    assert isinstance(daily, PluginLike)
    assert daily.original is sds.plugins["tushare_daily"]
    assert daily.description == "daily quotes of every A share"
    assert daily.version == "2.1.0"
    # what stock_datasource's queue gives every task, whatever the config's "timeout" and
    # "retry_attempts" (the plugin's own HTTP timeout and retries) say
    assert daily.default_timeout_seconds == 3600
    assert daily.task_timeouts == {"full": 7200, "backfill": 7200}
    assert daily.default_max_attempts == 3
    assert daily.rate_limit_per_minute == 300
    assert daily.dependencies == ()
    assert daily.optional_dependencies == ()
    assert daily.schedule == "daily"  # its unified scheduler ignores the plugin's time
    assert daily.groups == ("stock_datasource",)
    # what the sidecar shows of it: this stand-in has no category, role or schema
    assert (daily.category, daily.role, daily.table_schema) == ("", "", None)
    assert daily.config["schedule"] == {"frequency": "daily", "time": "18:30"}
    daily.original.get_schema = lambda: {"table_name": "ods_daily", "columns": []}
    assert daily.table_schema == {"table_name": "ods_daily", "columns": []}

    def broken() -> dict[str, Any]:
        raise OSError("schema.json: permission denied")

    daily.original.get_schema = broken
    with capture_logs() as logs:
        assert daily.table_schema is None
    assert _events(logs, "plugins.adapter_schema_failed")[0]["plugin"] == "tushare_daily"

    adj = plugins["tushare_adj_factor"]
    assert adj.description == "adjustment factors"  # from config.json
    assert (adj.default_timeout_seconds, adj.default_max_attempts) == (3600, 3)
    assert adj.rate_limit_per_minute == 120  # BasePlugin's default from get_rate_limit()
    assert adj.dependencies == ("tushare_daily",)
    assert adj.schedule == "daily"


def test_disabled_and_broken_plugins_are_skipped(sds: Any) -> None:
    with capture_logs() as logs:
        names = {p.name for p in discover()}
    assert "tushare_disabled" not in names and "tushare_broken" not in names
    skipped = _events(logs, "plugins.adapter_skipped")
    assert [e["plugin"] for e in skipped] == ["tushare_broken"]  # disabled is silent
    assert skipped[0]["log_level"] == "warning"
    assert "config.json is not valid JSON" in skipped[0]["reason"]


def test_discover_plugins_runs_only_when_nothing_is_registered(sds: Any) -> None:
    first = discover()
    assert set(sds.plugins) == {"tushare_daily", "tushare_adj_factor", "tushare_disabled",
                                "tushare_broken"}
    again = discover()  # the manager is populated now: no second discovery
    assert [p.original for p in again] == [p.original for p in first]

    from stock_datasource.core.plugin_manager import (  # type: ignore[import-not-found]
        PluginManager,
    )

    manager = PluginManager()
    manager.register_plugin(sds.plugins["tushare_daily"])
    sds.plugins.clear()
    sds.plugins.update(manager.plugins)
    assert [p.name for p in discover()] == ["tushare_daily"]


class Bare:
    """A plugin with a name and run() and none of BasePlugin's accessors."""

    name = "bare"

    def run(self, **kwargs: Any) -> Any:
        return kwargs.get("result", {"status": "success"})


class Configured:
    """A plugin with only get_config()."""

    def __init__(self, name: str, config: Any, **accessors: Any) -> None:
        self.name = name
        self._config = config
        for key, func in accessors.items():
            setattr(self, key, func)

    def get_config(self) -> Any:
        return self._config

    def run(self, **kwargs: Any) -> dict[str, Any]:
        return {"status": "success"}


def _boom() -> Any:
    raise RuntimeError("boom")


def test_missing_accessors_take_defaults_and_failing_ones_skip(sds: Any) -> None:
    sds.plugins.clear()
    sds.plugins.update({
        "bare": Bare(),
        "cfg": Configured("cfg", {"enabled": True, "timeout": "90", "max_retries": 4,
                                  "rate_limit": 50, "dependencies": ["bare", "cfg"]}),
        "off": Configured("off", {"enabled": False}),
        "deps_fail": Configured("deps_fail", {}, get_dependencies=_boom),
        "rate_fail": Configured("rate_fail", {}, get_rate_limit=_boom),
        "bad_config": Configured("bad_config", ["not", "a", "dict"]),
        "bad_deps": Configured("bad_deps", {"dependencies": "bare"}),
        "nameless": Configured("", {}),
        "bad_values": Configured("bad_values", {"timeout": "soon", "retry_attempts": -1,
                                                "rate_limit": True}),
    })
    with capture_logs() as logs:
        plugins = _by_name(discover())
    assert sorted(plugins) == ["bad_values", "bare", "cfg"]

    bare = plugins["bare"]
    assert (bare.description, bare.default_timeout_seconds, bare.default_max_attempts,
            bare.rate_limit_per_minute, bare.dependencies, bare.schedule) == \
        ("", 3600, 3, 120, (), None)
    cfg = plugins["cfg"]
    assert (cfg.default_timeout_seconds, cfg.default_max_attempts,
            cfg.rate_limit_per_minute, cfg.dependencies) == (3600, 3, 50, ("bare",))
    bad = plugins["bad_values"]
    assert bad.rate_limit_per_minute == 120

    skipped = {e["plugin"]: e["reason"] for e in _events(logs, "plugins.adapter_skipped")}
    assert sorted(skipped) == ["bad_config", "bad_deps", "deps_fail", "nameless", "rate_fail"]
    assert "boom" in skipped["deps_fail"] and "boom" in skipped["rate_fail"]
    ignored = {(e["plugin"], e["key"]) for e in _events(logs, "plugins.adapter_value_ignored")}
    assert ignored == {("bad_values", "rate_limit")}


# ------------------------------------------------------------------------ schedules
@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (None, None),
        ("", None),
        ({}, None),
        ("daily", "daily"),
        (" Daily ", "daily"),
        ({"frequency": "daily"}, "daily"),
        # the unified scheduler runs every daily plugin in its one daily job, whatever the
        # plugin's own time; get_schedule() fills in "daily" when only a cron is given
        ({"frequency": "daily", "time": "18:30"}, "daily"),
        ({"time": "9:05"}, "daily"),
        ({"cron": "0 6 * * *", "timezone": "Asia/Shanghai"}, "daily"),
        # weekly plugins join weekly_sync (Saturday 10:00), monthly ones monthly_sync
        ({"frequency": "weekly", "time": "17:00", "day_of_week": "fri"}, "weekly"),
        ({"frequency": "weekly"}, "weekly"),
        ("weekly", "weekly"),
        ({"frequency": "monthly", "day": 1, "time": "20:00"}, "monthly"),
        ({"frequency": "Monthly"}, "monthly"),
        # realtime plugins are not in any scheduled job
        ({"frequency": "realtime", "time": "09:30"}, None),
        ("realtime", None),
        # stockq schedules of plugins written that way are kept
        ("weekly fri 18:00", "weekly fri 18:00"),
        ("daily 19:30", "daily 19:30"),
        ("monthly last 06:00", "monthly last 06:00"),
        ("0 18 * * 1-5", "0 18 * * 1-5"),
        ("30  19 * * 0", "30 19 * * 0"),
    ],
)
def test_schedules_are_mapped(schedule: Any, expected: str | None) -> None:
    with capture_logs() as logs:
        assert map_schedule(schedule, "p") == expected
    assert _events(logs, "plugins.adapter_schedule_ignored") == []


@pytest.mark.parametrize(
    "schedule",
    [
        "hourly",
        "25:00",
        "0 25 * * *",  # the right shape, but no such hour
        "* * *",
        "weekly someday 18:00",
        "monthly 32 18:00",
        "0 18 * * someday",
        {"frequency": "hourly", "time": "18:00"},
        ["daily"],
        42,
    ],
)
def test_unmappable_schedules_are_dropped_with_a_warning(schedule: Any) -> None:
    with capture_logs() as logs:
        assert map_schedule(schedule, "p") is None
    [warning] = _events(logs, "plugins.adapter_schedule_ignored")
    assert warning["log_level"] == "warning"
    assert warning["plugin"] == "p" and warning["schedule"] == repr(schedule)


def test_a_plugin_with_an_unmappable_schedule_is_kept_unscheduled(sds: Any) -> None:
    sds.plugins["odd"] = Configured("odd", {"schedule": {"frequency": "hourly"}})
    with capture_logs() as logs:
        plugins = _by_name(discover())
    assert plugins["odd"].schedule is None
    [warning] = _events(logs, "plugins.adapter_schedule_ignored")
    assert warning["plugin"] == "odd" and "hourly" in warning["schedule"]


# ------------------------------------------------------------------------------ run
def test_run_passes_kwargs_through_and_returns_the_result(sds: Any) -> None:
    from stock_datasource.core.base_plugin import CALLS  # type: ignore[import-not-found]

    daily = _by_name(discover())["tushare_daily"]
    result = daily.run(trade_date="20240105", ts_code="000001.SZ")
    assert CALLS == [("tushare_daily", {"trade_date": "20240105", "ts_code": "000001.SZ"})]
    assert result["status"] == "success"
    assert result["steps"]["load"]["total_records"] == 2
    assert result["parameters"] == {"trade_date": "20240105", "ts_code": "000001.SZ"}
    failed = daily.run(fail="upstream said no")
    assert failed["status"] == "failed" and failed["error"] == "upstream said no"


def test_a_result_that_is_not_a_dict_becomes_a_failure(sds: Any) -> None:
    sds.plugins.clear()
    sds.plugins["bare"] = Bare()
    [bare] = discover()
    assert bare.run() == {"status": "success"}
    out = bare.run(result=["rows"])
    assert out["status"] == "failed" and out["error_type"] == "invalid_result"
    assert "list" in out["error"]


def test_the_worker_runner_runs_adapted_plugins_under_the_proxy(
        sds: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from stock_datasource.core.base_plugin import CALLS

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    registry = PluginRegistry([*discover()])
    task = {"task_id": "t1", "plugin_name": "tushare_adj_factor", "task_type": "incremental",
            "attempt": 1, "trade_dates": ["2024-01-03", "20240102"], "params": {"x": 1}}
    out = run_task(registry, task, None, ProxyConfig(url="http://proxy.test:3128"))
    assert out.ok and out.records == 4 and out.checkpoint == "20240103"
    assert CALLS == [("tushare_adj_factor", {"x": 1, "trade_date": "20240102"}),
                     ("tushare_adj_factor", {"x": 1, "trade_date": "20240103"})]
    # a range is the trading days in it (weekdays: the stand-in has no calendar)
    ranged = {**task, "task_type": "backfill", "trade_dates": [], "start_date": "20240105",
              "end_date": "2024-01-08", "ts_code": "000001.SZ"}
    CALLS.clear()
    out = run_task(registry, ranged, None, ProxyConfig(url="http://proxy.test:3128"))
    assert out.ok and out.checkpoint == "20240108"
    assert CALLS == [("tushare_adj_factor", {"x": 1, "trade_date": d, "ts_code": "000001.SZ"})
                     for d in ("20240105", "20240108")]
    one = {**task, "trade_dates": ["20240102"]}
    out = run_task(registry, one, None, ProxyConfig(url="http://proxy.test:3128"))
    assert out.ok and out.result["message"] == "HTTP_PROXY set"
    out = run_task(registry, one, None, ProxyConfig())
    assert out.ok and out.result["message"] == "HTTP_PROXY not set"


# ------------------------------------------------------------------------- registry
def test_the_registry_resolves_the_dependency_order(sds: Any) -> None:
    registry = PluginRegistry([*discover()])
    assert registry.names() == ["tushare_adj_factor", "tushare_daily"]
    assert registry.resolve(["tushare_adj_factor"]) == ["tushare_daily", "tushare_adj_factor"]
    assert registry.resolve(["tushare_adj_factor", "tushare_daily"]) == \
        ["tushare_daily", "tushare_adj_factor"]
    assert registry.group("stock_datasource") == ["tushare_adj_factor", "tushare_daily"]
    described = registry.describe("tushare_daily")
    assert described["schedule"] == "daily" and described["default_max_attempts"] == 3


# ------------------------------------------------------------------- no package
def test_without_the_package_discover_returns_nothing(clean_modules: None) -> None:
    with capture_logs() as logs:
        assert discover() == []
    assert logs == []


def _fake_package(root: Path, manager_source: str) -> None:
    core = root / "stock_datasource" / "core"
    core.mkdir(parents=True)
    (root / "stock_datasource" / "__init__.py").write_text("")
    (core / "__init__.py").write_text("")
    (core / "plugin_manager.py").write_text(manager_source)


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("import a_dependency_that_is_not_installed\n", "a_dependency_that_is_not_installed"),
        ("raise RuntimeError('no database configured')\n", "no database configured"),
        ("class M:\n    plugins = {}\n    def discover_plugins(self):\n"
         "        raise OSError('plugins folder unreadable')\nplugin_manager = M()\n",
         "plugins folder unreadable"),
    ],
)
def test_a_broken_package_is_a_warning_not_a_crash(
        clean_modules: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        source: str, error: str) -> None:
    _fake_package(tmp_path, source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with capture_logs() as logs:
        assert discover() == []
    [warning] = _events(logs, "plugins.adapter_failed")
    assert warning["log_level"] == "warning" and error in warning["error"]
