"""Schedule expressions (app.scheduler.triggers), the jobs built from them
(app.scheduler.jobs) and the scheduler's settings (app.settings._scheduler_values).

Pure computation: no Redis, no clock, no sleeping."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from app.errors import ConfigError
from app.scheduler.jobs import DAILY_SYNC, build_jobs
from app.scheduler.triggers import (
    cron_trigger,
    crontab_days,
    next_fire,
    normalise,
    slots_between,
)
from app.settings import Settings, load_settings
from plugins_bridge.contract import Plugin
from plugins_bridge.registry import PluginRegistry

TZ = "Asia/Shanghai"
SH = ZoneInfo(TZ)
MON = 0  # datetime.weekday() numbering, for the assertions
TUE, WED, THU, FRI, SAT, SUN = 1, 2, 3, 4, 5, 6


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)  # type: ignore[misc]


# Sunday 29 November 2026, midnight: the two weeks after it hold every weekday twice
WEEKS_START = sh(2026, 11, 29, 0, 0)


def two_weeks(trigger: CronTrigger) -> list[datetime]:
    return list(slots_between(trigger, WEEKS_START, WEEKS_START + timedelta(days=14)))


def weekdays(expression: str) -> set[int]:
    fires = two_weeks(cron_trigger(expression, TZ))
    assert fires, expression
    return {f.weekday() for f in fires}


# ------------------------------------------------------------------ day of week
def test_one_to_five_is_monday_to_friday_unlike_apschedulers_from_crontab() -> None:
    fires = two_weeks(cron_trigger("0 18 * * 1-5", TZ))
    assert len(fires) == 10
    assert {f.weekday() for f in fires} == {MON, TUE, WED, THU, FRI}
    assert all((f.hour, f.minute, f.second) == (18, 0, 0) for f in fires)
    assert all(f.utcoffset() == timedelta(hours=8) for f in fires)
    assert not any(f.weekday() in (SAT, SUN) for f in fires)
    # the reason for the translation: APScheduler 3 counts 0 = Monday, so its own
    # reading of the same field is Tuesday to Saturday
    theirs = two_weeks(CronTrigger.from_crontab("0 18 * * 1-5", timezone=SH))
    assert {f.weekday() for f in theirs} == {TUE, WED, THU, FRI, SAT}


@pytest.mark.parametrize(("field", "expected"), [
    ("0", {SUN}),
    ("7", {SUN}),
    ("sun", {SUN}),
    ("Sunday", {SUN}),
    ("1", {MON}),
    ("6", {SAT}),
    ("*/2", {SUN, TUE, THU, SAT}),  # 0, 2, 4, 6
    ("1-5/2", {MON, WED, FRI}),
    ("1,3,5", {MON, WED, FRI}),
    ("0,6", {SAT, SUN}),
    ("6,7", {SAT, SUN}),
    ("5-7", {FRI, SAT, SUN}),
    ("0-7", {MON, TUE, WED, THU, FRI, SAT, SUN}),
    ("mon-fri", {MON, TUE, WED, THU, FRI}),
    ("MON-FRI", {MON, TUE, WED, THU, FRI}),
    ("mon,wed-fri", {MON, WED, THU, FRI}),
    ("sat,sun", {SAT, SUN}),
    ("*", {MON, TUE, WED, THU, FRI, SAT, SUN}),
])
def test_day_of_week_field_uses_crontab_numbering(field: str, expected: set[int]) -> None:
    assert weekdays(f"0 18 * * {field}") == expected


def test_crontab_days_translates_to_apscheduler_names() -> None:
    assert crontab_days("1-5", "x") == "mon,tue,wed,thu,fri"
    assert crontab_days("0", "x") == "sun"
    assert crontab_days("7", "x") == "sun"
    assert crontab_days("5-7", "x") == "fri,sat,sun"
    assert crontab_days("*", "x") == "*"


def test_seven_as_the_start_of_a_range_is_sunday() -> None:
    """``7-7`` is Sunday alone (7 = Sunday), as ``0-0`` is."""
    assert weekdays("0 18 * * 0-0") == {SUN}
    assert weekdays("0 18 * * 7-7") == {SUN}


# ------------------------------------------------------------------ 6 fields
def test_six_fields_have_seconds_first() -> None:
    trigger = cron_trigger("*/10 * * * * *", TZ)
    start = sh(2026, 12, 1, 9, 0, 0)
    fires = list(slots_between(trigger, start, start + timedelta(minutes=1)))
    assert [f.second for f in fires] == [10, 20, 30, 40, 50, 0]
    assert fires[-1] == start + timedelta(minutes=1)
    assert normalise("*/10  *  * * * *") == "*/10 * * * * *"

    at_half = cron_trigger("30 0 18 * * 1-5", TZ)
    fires = two_weeks(at_half)
    assert len(fires) == 10 and {f.weekday() for f in fires} == {MON, TUE, WED, THU, FRI}
    assert all((f.hour, f.minute, f.second) == (18, 0, 30) for f in fires)


def test_five_fields_fire_on_the_whole_minute() -> None:
    [fire] = list(slots_between(cron_trigger("5 9 * * *", TZ), sh(2026, 12, 1, 0, 0),
                                sh(2026, 12, 1, 23, 59)))
    assert fire == sh(2026, 12, 1, 9, 5, 0)


# ------------------------------------------------------------------ shorthands
def test_shorthands_normalise_to_crontab() -> None:
    assert normalise("daily 19:30") == "30 19 * * 1-5"
    assert normalise("Daily  9:05") == "5 9 * * 1-5"
    assert normalise("weekly fri 18:30") == "30 18 * * fri"
    assert normalise("weekly 5 18:30") == "30 18 * * fri"
    assert normalise("weekly sunday 07:00") == "0 7 * * sun"
    assert normalise("monthly 1 06:00") == "0 6 1 * *"
    assert normalise("monthly last 15:00") == "0 15 last * *"
    assert normalise("0 18 * * 1-5") == "0 18 * * 1-5"


def test_daily_is_monday_to_friday() -> None:
    fires = two_weeks(cron_trigger("daily 19:30", TZ))
    assert len(fires) == 10
    assert {f.weekday() for f in fires} == {MON, TUE, WED, THU, FRI}
    assert all((f.hour, f.minute) == (19, 30) for f in fires)


def test_weekly_fires_on_its_day() -> None:
    fires = two_weeks(cron_trigger("weekly fri 18:30", TZ))
    assert fires == [sh(2026, 12, 4, 18, 30), sh(2026, 12, 11, 18, 30)]
    sundays = two_weeks(cron_trigger("weekly 0 07:00", TZ))
    assert [f.weekday() for f in sundays] == [SUN, SUN]


def test_monthly_on_a_day_and_on_the_last_day() -> None:
    start, end = sh(2026, 1, 15, 0, 0), sh(2026, 5, 15, 0, 0)
    firsts = list(slots_between(cron_trigger("monthly 1 06:00", TZ), start, end))
    assert firsts == [sh(2026, m, 1, 6, 0) for m in (2, 3, 4, 5)]
    lasts = list(slots_between(cron_trigger("monthly last 15:00", TZ), start, end))
    assert lasts == [sh(2026, 1, 31, 15, 0), sh(2026, 2, 28, 15, 0), sh(2026, 3, 31, 15, 0),
                     sh(2026, 4, 30, 15, 0)]
    leap = list(slots_between(cron_trigger("monthly last 15:00", TZ), sh(2028, 2, 1, 0, 0),
                              sh(2028, 3, 1, 0, 0)))
    assert leap == [sh(2028, 2, 29, 15, 0)]
    # the 31st is skipped by the months without one
    thirty_first = list(slots_between(cron_trigger("monthly 31 06:00", TZ), start, end))
    assert thirty_first == [sh(2026, 1, 31, 6, 0), sh(2026, 3, 31, 6, 0)]


# ------------------------------------------------------------------ bad expressions
@pytest.mark.parametrize(("expression", "words"), [
    ("", "must be a crontab expression"),
    ("0 18 * *", "must be a crontab expression of 5 fields"),
    ("0 0 18 * * 1-5 2026", "must be a crontab expression of 5 fields"),
    ("nightly", "must be a crontab expression"),
    ("0 18 * * 8", "'8' is not a day of the week"),
    ("0 18 * * funday", "'funday' is not a day of the week"),
    ("0 18 * * mo", "'mo' is not a day of the week"),
    ("0 18 * * 1-", "is not a day of the week"),
    ("0 18 * * 5-1", "the range '5-1' runs backwards"),
    ("0 18 * * sat-mon", "the range 'sat-mon' runs backwards"),
    ("0 18 * * */0", "bad step"),
    ("0 18 * * 1-5/x", "bad step"),
    ("0 24 * * *", "is not valid"),
    ("60 18 * * *", "is not valid"),
    ("0 18 32 * *", "is not valid"),
    ("0 18 * 13 *", "is not valid"),
    ("daily", "must look like 'daily HH:MM'"),
    ("daily 25:00", "must look like 'daily HH:MM'"),
    ("daily 18:60", "must look like 'daily HH:MM'"),
    ("daily 1800", "must look like 'daily HH:MM'"),
    ("daily 18:00 19:00", "must look like 'daily HH:MM'"),
    ("weekly fri", "must look like 'weekly DAY HH:MM'"),
    ("weekly 18:00", "must look like 'weekly DAY HH:MM'"),
    ("weekly fri 24:00", "must look like 'weekly DAY HH:MM'"),
    ("weekly someday 18:00", "'someday' is not a day of the week"),
    ("weekly 9 18:00", "'9' is not a day of the week"),
    ("monthly 06:00", "must look like 'monthly N HH:MM'"),
    ("monthly 0 06:00", "the day of month must be 1-31 or 'last'"),
    ("monthly 32 06:00", "the day of month must be 1-31 or 'last'"),
    ("monthly first 06:00", "the day of month must be 1-31 or 'last'"),
])
def test_bad_expressions_are_config_errors_naming_the_expression(
        expression: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        cron_trigger(expression, TZ)
    message = err.value.message
    assert repr(expression) in message, message
    assert words in message, message
    assert err.value.code == "config_error"


# ------------------------------------------------------------------ slots and next fire
def test_slots_between_excludes_the_start_and_includes_the_end() -> None:
    trigger = cron_trigger("0 18 * * 1-5", TZ)
    monday, tuesday, wednesday = (sh(2026, 11, 30, 18, 0), sh(2026, 12, 1, 18, 0),
                                  sh(2026, 12, 2, 18, 0))
    assert list(slots_between(trigger, monday, wednesday)) == [tuesday, wednesday]
    assert list(slots_between(trigger, monday - timedelta(microseconds=1), monday)) == [monday]
    assert list(slots_between(trigger, monday, monday)) == []
    assert list(slots_between(trigger, monday, tuesday - timedelta(seconds=1))) == []
    assert list(slots_between(trigger, wednesday, monday)) == []  # an empty interval


def test_slots_between_stops_at_the_limit_oldest_first() -> None:
    trigger = cron_trigger("0 18 * * 1-5", TZ)
    after, until = sh(2026, 11, 1, 0, 0), sh(2026, 12, 31, 23, 59)
    everything = list(slots_between(trigger, after, until))
    assert everything == sorted(everything) and len(everything) == 44
    assert list(slots_between(trigger, after, until, limit=3)) == everything[:3]
    assert list(slots_between(trigger, after, until, limit=0)) == []
    # a weekend between the slots is skipped
    friday = sh(2026, 12, 4, 18, 0)
    assert list(slots_between(trigger, friday, friday + timedelta(days=3))) == [
        sh(2026, 12, 7, 18, 0)]


def test_next_fire_is_strictly_after_now() -> None:
    trigger = cron_trigger("0 18 * * 1-5", TZ)
    monday = sh(2026, 11, 30, 18, 0)
    assert next_fire(trigger, monday) == sh(2026, 12, 1, 18, 0)
    assert next_fire(trigger, monday - timedelta(microseconds=1)) == monday
    assert next_fire(trigger, monday - timedelta(hours=1)) == monday
    friday = sh(2026, 12, 4, 18, 0)
    assert next_fire(trigger, friday) == sh(2026, 12, 7, 18, 0)  # over the weekend
    # the same instant given in another zone gives the same next fire
    assert next_fire(trigger, monday.astimezone(ZoneInfo("UTC"))) == sh(2026, 12, 1, 18, 0)
    seconds = cron_trigger("*/10 * * * * *", TZ)
    ten = sh(2026, 12, 1, 9, 0, 10)
    assert next_fire(seconds, ten) == sh(2026, 12, 1, 9, 0, 20)
    assert next_fire(seconds, ten - timedelta(microseconds=1)) == ten


def test_triggers_use_the_zone_given() -> None:
    utc = cron_trigger("0 18 * * 1-5", "UTC")
    nxt = next_fire(utc, sh(2026, 11, 30, 12, 0))
    assert nxt is not None and nxt.utcoffset() == timedelta(0)
    assert nxt == datetime(2026, 11, 30, 18, 0, tzinfo=ZoneInfo("UTC"))


# ------------------------------------------------------------------ build_jobs
class Quick(Plugin):
    name = "quick"
    schedule = "daily"


class Weekly(Plugin):
    name = "weekly_report"
    schedule = "weekly fri 19:30"


class Broken(Plugin):
    name = "broken_report"
    schedule = "weekly someday 18:00"


class WrongFields(Plugin):
    name = "short_cron"
    schedule = "0 18 * *"


class NotText(Plugin):
    name = "numeric"
    schedule = 1800  # type: ignore[assignment]


def test_build_jobs_from_settings_and_plugins() -> None:
    settings = Settings(daily_sync_cron="daily 17:45")
    jobs = build_jobs(settings, PluginRegistry([Quick(), Weekly()]))
    assert [j.name for j in jobs] == [DAILY_SYNC, "plugin:weekly_report"]
    sync, weekly = jobs
    assert sync.expression == "45 17 * * 1-5" and sync.plugins == ("quick",)
    assert sync.timezone == TZ
    assert weekly.expression == "30 19 * * fri" and weekly.plugins == ("weekly_report",)
    assert next_fire(weekly.trigger, sh(2026, 11, 30, 0, 0)) == sh(2026, 12, 4, 19, 30)


@pytest.mark.parametrize("plugin", [Broken, WrongFields, NotText])
def test_a_plugin_with_a_bad_schedule_is_named(plugin: type[Plugin]) -> None:
    with pytest.raises(ConfigError) as err:
        build_jobs(Settings(), PluginRegistry([Quick(), plugin()]))
    assert f"plugin {plugin.name!r}" in err.value.message, err.value.message


@pytest.mark.parametrize("cron", [
    "0 18 * * 9",  # a bad day: caught when the trigger is built
    "0 25 * * 1-5",  # a bad hour
    "0 18 * *",  # a wrong field count: caught when the expression is normalised
    "daily 25:00",  # a bad shorthand
])
def test_a_bad_daily_sync_cron_is_named(cron: str) -> None:
    settings = replace(Settings(), daily_sync_cron=cron)
    with pytest.raises(ConfigError) as err:
        build_jobs(settings, PluginRegistry([Quick()]))
    assert "STOCKQ_DAILY_SYNC_CRON" in err.value.message, err.value.message
    assert repr(cron) in err.value.message


def test_a_bad_daily_sync_cron_from_the_environment_fails_at_build_time() -> None:
    settings = load_settings({"STOCKQ_DAILY_SYNC_CRON": " 0 18 * * 0-8 "})
    assert settings.daily_sync_cron == "0 18 * * 0-8"  # checked later, by build_jobs
    with pytest.raises(ConfigError) as err:
        build_jobs(settings, PluginRegistry())
    assert "STOCKQ_DAILY_SYNC_CRON" in err.value.message
    assert "'8' is not a day of the week" in err.value.message


# ------------------------------------------------------------------ settings
def test_scheduler_defaults() -> None:
    settings = load_settings({})
    assert settings.timezone == "Asia/Shanghai"
    assert settings.daily_sync_cron == "0 18 * * 1-5"
    assert settings.catch_up_window_seconds == 24 * 3600
    assert settings.calendar_exchange == "SSE"
    assert settings.tushare_token == ""


def test_timezone_is_checked() -> None:
    assert load_settings({"STOCKQ_TIMEZONE": " Europe/Paris "}).timezone == "Europe/Paris"
    for bad in ("Mars/Olympus_Mons", "../etc/passwd", "/etc/localtime", "Asia/"):
        with pytest.raises(ConfigError) as err:
            load_settings({"STOCKQ_TIMEZONE": bad})
        assert "STOCKQ_TIMEZONE" in err.value.message and repr(bad) in err.value.message


@pytest.mark.parametrize("region", ["Asia", "America"])
def test_a_region_name_is_not_a_timezone(region: str) -> None:
    """``Asia`` is a directory of the tz database, not a zone: a ConfigError too, not
    the IsADirectoryError zoneinfo raises for it."""
    with pytest.raises(ConfigError) as err:
        load_settings({"STOCKQ_TIMEZONE": region})
    assert "STOCKQ_TIMEZONE" in err.value.message


def test_calendar_exchange_is_an_upper_case_code() -> None:
    assert load_settings({"STOCKQ_CALENDAR_EXCHANGE": " szse "}).calendar_exchange == "SZSE"
    for bad in ("SS-E", "SSE:1", "S SE", "SSE*"):
        with pytest.raises(ConfigError) as err:
            load_settings({"STOCKQ_CALENDAR_EXCHANGE": bad})
        assert "STOCKQ_CALENDAR_EXCHANGE" in err.value.message


def test_catch_up_window_hours() -> None:
    assert load_settings({"STOCKQ_CATCH_UP_WINDOW_HOURS": "2.5"}).catch_up_window_seconds \
        == 9000
    assert load_settings({"STOCKQ_CATCH_UP_WINDOW_HOURS": "0"}).catch_up_window_seconds == 0
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(ConfigError) as err:
            load_settings({"STOCKQ_CATCH_UP_WINDOW_HOURS": bad})
        assert "STOCKQ_CATCH_UP_WINDOW_HOURS" in err.value.message


def test_tushare_token_is_read_and_never_shown() -> None:
    token = "tok-5e6f7a8b9c0d1e2f"
    settings = load_settings({"TUSHARE_TOKEN": f" {token} "})
    assert settings.tushare_token == token
    assert token not in repr(settings) and token not in str(settings)
    # STOCKQ_TUSHARE_TOKEN wins over the legacy name
    both = load_settings({"TUSHARE_TOKEN": token, "STOCKQ_TUSHARE_TOKEN": "newer-token"})
    assert both.tushare_token == "newer-token"
    assert load_settings({"TUSHARE_TOKEN": "   "}).tushare_token == ""
