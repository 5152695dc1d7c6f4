"""Schedule expressions -> APScheduler 3 cron triggers, and the slots between two times.

Accepted forms (the global ``STOCKQ_DAILY_SYNC_CRON`` and a plugin's ``schedule``):

* a standard 5-field crontab ``minute hour day month day_of_week`` where day_of_week
  counts **0 (or 7) = Sunday, 1 = Monday** as crontab does.  One difference remains:
  when both the day of month and the day of week are restricted, a slot needs both to
  match (APScheduler's rule), where crontab fires when either does;  APScheduler 3's own
  ``CronTrigger.from_crontab`` reads ``1-5`` as Tuesday to Saturday (its 0 is Monday);
  :func:`cron_trigger` translates the field to day names first, so ``0 18 * * 1-5`` is
  Monday to Friday at 18:00;
* 6 fields: a leading seconds field (``*/10 * * * * *``), for tests and demos;
* ``daily HH:MM`` (Monday to Friday), ``weekly DAY HH:MM`` (``fri``), ``monthly N HH:MM``
  (day of month 1-31, or ``last``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from app.errors import ConfigError

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering
_APS_ORDER = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _day_number(token: str, expression: str) -> int:
    token = token.strip().lower()
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    if token[:3] in DAY_NAMES and token in (token[:3], _full_name(token[:3])):
        return DAY_NAMES.index(token[:3])
    raise ConfigError(f"schedule {expression!r}: {token!r} is not a day of the week "
                      "(0-7 or sun..sat)")


def _full_name(short: str) -> str:
    return {"sun": "sunday", "mon": "monday", "tue": "tuesday", "wed": "wednesday",
            "thu": "thursday", "fri": "friday", "sat": "saturday"}[short]


def crontab_days(field: str, expression: str) -> str:
    """A crontab day_of_week field as APScheduler day names (``1-5`` -> ``mon,...,fri``)."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        body, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ConfigError(f"schedule {expression!r}: bad step in {item!r}")
            step = int(step_text)
        if body == "*":
            lo, hi = 0, 6
        elif "-" in body:
            a, b = body.split("-", 1)
            lo, hi = _day_number(a, expression), _day_number(b, expression)
            if b.strip() == "7":  # 7 is Sunday too: x-7 runs up to it, 7-7 is Sunday
                hi = 7
                lo = 7 if a.strip() == "7" else lo
        else:
            lo = hi = _day_number(body, expression)
            if step_text:
                hi = 6
        if hi < lo:
            raise ConfigError(f"schedule {expression!r}: the range {body!r} runs backwards")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(name for name in _APS_ORDER if DAY_NAMES.index(name) in days)


def normalise(expression: str) -> str:
    """The schedule as a 5- or 6-field crontab expression (crontab day numbering)."""
    text = " ".join(expression.split())
    words = text.lower().split(" ")
    if words[0] in ("daily", "weekly", "monthly"):
        return _shorthand(text, words)
    if len(words) not in (5, 6):
        raise ConfigError(f"schedule {expression!r} must be a crontab expression of 5 fields "
                          "(minute hour day month day_of_week), 6 with seconds first, or "
                          "'daily HH:MM', 'weekly DAY HH:MM', 'monthly N HH:MM'")
    return text


def _shorthand(text: str, words: list[str]) -> str:
    kind, args = words[0], words[1:]
    expected = {"daily": 1, "weekly": 2, "monthly": 2}[kind]
    match = _TIME.match(args[-1]) if len(args) == expected else None
    if match is None:
        usage = {"daily": "daily HH:MM", "weekly": "weekly DAY HH:MM",
                 "monthly": "monthly N HH:MM"}[kind]
        raise ConfigError(f"schedule {text!r} must look like {usage!r}")
    hour, minute = int(match.group(1)), int(match.group(2))
    if kind == "daily":
        return f"{minute} {hour} * * 1-5"
    if kind == "weekly":
        return f"{minute} {hour} * * {DAY_NAMES[_day_number(args[0], text)]}"
    day = args[0]
    if day != "last" and not (day.isdigit() and 1 <= int(day) <= 31):
        raise ConfigError(f"schedule {text!r}: the day of month must be 1-31 or 'last'")
    return f"{minute} {hour} {day} * *"


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """An APScheduler 3 trigger for ``expression`` (see the module docstring)."""
    text = normalise(expression)
    fields = text.split(" ")
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, dow = fields
    try:
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=crontab_days(dow, expression),
                           timezone=ZoneInfo(timezone))
    except ValueError as exc:
        raise ConfigError(f"schedule {expression!r} is not valid: {exc}") from None


def slots_between(trigger: CronTrigger, after: datetime, until: datetime,
                  limit: int = 1000) -> Iterator[datetime]:
    """Fire times ``t`` with ``after < t <= until``, oldest first, at most ``limit``."""
    cursor = after + timedelta(microseconds=1)
    for _ in range(limit):
        nxt = trigger.get_next_fire_time(None, cursor)
        if nxt is None or nxt > until:
            return
        yield nxt
        cursor = nxt + timedelta(microseconds=1)


def next_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The first fire time strictly after ``now``."""
    nxt: datetime | None = trigger.get_next_fire_time(None, now + timedelta(microseconds=1))
    return nxt
