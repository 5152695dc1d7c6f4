"""Every setting stockq reads, in one place.

This is the only module that reads ``os.environ``.  Everything else receives a
:class:`Settings` instance (usually from :func:`load_settings`).  Names use the
``STOCKQ_`` prefix; a few names of the system stockq replaces are still honoured
(``REDIS_ENABLED``, ``REDIS_HOST``/``REDIS_PORT``/``REDIS_PASSWORD``/``REDIS_DB``) so an
existing deployment keeps its configuration.  docs/configuration.md lists them all.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.environment import PROXY_ENVIRONMENT, set_namespace
from app.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HH_MM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
DEMO_NAMESPACE = "demo"  # `stockq run --demo` (and its data under STOCKQ_DATA_DIR/demo)


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def _number(name: str, raw: str, kind: type[int] | type[float], minimum: float) -> float:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs and messages).

    Covers ``user:password@`` in the authority and a ``password=`` query argument
    (redis-py accepts both)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    out = url
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        out = out.replace(f"{userinfo}@", f"{userinfo.partition(':')[0]}:***@", 1)
    head, sep, query = out.partition("?")
    if sep:
        out = head + sep + _QUERY_PASSWORD.sub(r"\1***", query)
    return out


def _check_url(url: str, source: str) -> None:
    """Reject a Redis URL redis-py would choke on (scheme, port), naming it redacted."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed or out-of-range port
    except ValueError as exc:
        raise ConfigError(f"{source}={shown!r} is malformed: {exc}") from None
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"{source}={shown!r} must start with redis://, rediss:// or unix://")


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed settings; build with :func:`load_settings` (or directly in tests)."""

    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may hold a password
    redis_enabled: bool = True
    redis_connect_timeout: float = 2.0
    # the synchronous Producer polls for a reply this long before it sleeps (0: never)
    producer_spin_us: int = 200
    key_prefix: str = "stock"  # the namespace (STOCKQ_NAMESPACE)
    demo: bool = False  # `stockq run --demo` (never read from the environment)
    data_dir: Path = field(default_factory=lambda: Path.home() / ".local/share/stockq")
    plugins: tuple[str, ...] = ()
    builtin_plugins: bool = True
    log_level: str = "info"
    log_format: str = "auto"  # auto | json | console
    # task defaults and limits
    default_timeout_seconds: int = 3600
    max_timeout_seconds: int = 7 * 24 * 3600
    default_max_attempts: int = 3
    max_attempts_limit: int = 20
    max_trade_dates: int = 10_000
    max_execution_tasks: int = 50_000
    # retry backoff: delay = min(cap, base * 2**(attempt-1)), then equal jitter
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 900.0
    # worker children: a task's memory limit in MB (0: none; the plugin's or the task's
    # own limit applies first), and how much of what a task prints is stored with it
    # (its last bytes) and written to the worker's log (its first bytes)
    memory_limit_mb: int = 0
    task_output_bytes: int = 16 * 1024
    task_output_log_bytes: int = 8 * 1024
    # leases and retention
    lease_seconds: float = 30.0
    retention_seconds: float = 7 * 24 * 3600.0
    # HTTP sidecar
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_token: str = field(default="", repr=False)
    api_read_token: str = field(default="", repr=False)  # GET only (STOCKQ_API_READ_TOKEN)
    api_max_body: int = 1024 * 1024
    api_cors_origins: tuple[str, ...] = ()
    # TuShare HTTP proxy, applied only inside task execution (plugins_bridge.proxy)
    http_proxy: str = field(default="", repr=False)  # may hold a password
    no_proxy: tuple[str, ...] = ()
    # TuShare
    tushare_url: str = "http://api.waditu.com/dataapi"
    tushare_token: str = field(default="", repr=False)
    tushare_timeout: float = 30.0
    # ClickHouse (plugins_bridge.warehouse)
    clickhouse_url: str = field(default="", repr=False)  # may hold a password
    # POST /api/v1/query (app.query_sandbox): a read-only user's server URL, limits
    clickhouse_query_url: str = field(default="", repr=False)  # may hold a password
    query_max_rows: int = 10_000
    query_max_bytes: int = 64 * 1024 * 1024  # of the result
    query_timeout: float = 30.0
    query_concurrency: int = 2  # queries running at once; each has a session of its own
    audit_max_rows: int = 1_000_000  # per outbox list, while ClickHouse is unreachable
    # scheduler
    timezone: str = "Asia/Shanghai"
    daily_sync_cron: str = "0 18 * * 1-5"
    # the jobs of plugins scheduled "weekly" / "monthly" (stock_datasource's: Saturday
    # 10:00, the 1st at 10:00); a job exists only when a plugin is scheduled so
    weekly_sync_cron: str = "0 10 * * 6"
    monthly_sync_cron: str = "0 10 1 * *"
    catch_up_window_seconds: float = 24 * 3600.0
    schedule_grace_seconds: float = 60.0
    calendar_exchange: str = "SSE"
    # when a trading day's data is published (in `timezone`): before it, "the latest
    # trading day" of a manual sync or a dateless incremental task is the one before
    data_ready_time: str = "17:00"

    @property
    def no_proxy_hosts(self) -> tuple[str, ...]:
        """Hosts that never go through the proxy: Redis (and ClickHouse) plus extras."""
        hosts = [urlsplit(self.redis_url).hostname or ""]
        for url in (self.clickhouse_url, self.clickhouse_query_url):
            if url and not url.startswith("chdb:"):
                hosts.append(urlsplit(url).hostname or "")
        return tuple(h for h in dict.fromkeys([*hosts, *self.no_proxy]) if h)

    @property
    def tushare_proxies(self) -> dict[str, str]:
        """``requests`` proxies for one TuShare call made outside a task ({} without a
        proxy): the scheduler's calendar fetch and ``stockq doctor``."""
        return {"http": self.http_proxy, "https": self.http_proxy} if self.http_proxy else {}

    @property
    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url)

    def data_day(self, now: float | None = None) -> date:
        """The latest calendar day whose data is published at ``now`` (epoch s; default
        the present), in the configured time zone: today once ``data_ready_time`` has
        passed, else yesterday.  (The latest *trading* day is the latest open day on or
        before it.)"""
        moment = datetime.fromtimestamp(time.time() if now is None else now,
                                        ZoneInfo(self.timezone))
        hour, minute = (int(p) for p in self.data_ready_time.split(":"))
        ready = moment.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return moment.date() if moment >= ready else moment.date() - timedelta(days=1)

    @property
    def namespace(self) -> str:
        """The prefix of every Redis key (``STOCKQ_NAMESPACE``, default ``stock``)."""
        return self.key_prefix


# (setting attribute, environment names in order of precedence, parser)
_NUMERIC: tuple[tuple[str, str, type[int] | type[float], float], ...] = (
    ("redis_connect_timeout", "STOCKQ_REDIS_TIMEOUT", float, 0.1),
    ("producer_spin_us", "STOCKQ_PRODUCER_SPIN_US", int, 0),
    ("default_timeout_seconds", "STOCKQ_DEFAULT_TIMEOUT", int, 1),
    ("max_timeout_seconds", "STOCKQ_MAX_TIMEOUT", int, 1),
    ("default_max_attempts", "STOCKQ_DEFAULT_MAX_ATTEMPTS", int, 1),
    ("max_attempts_limit", "STOCKQ_MAX_ATTEMPTS_LIMIT", int, 1),
    ("max_trade_dates", "STOCKQ_MAX_TRADE_DATES", int, 1),
    ("max_execution_tasks", "STOCKQ_MAX_EXECUTION_TASKS", int, 1),
    ("retry_base_seconds", "STOCKQ_RETRY_BASE_SECONDS", float, 0),
    ("retry_max_seconds", "STOCKQ_RETRY_MAX_SECONDS", float, 0),
    ("lease_seconds", "STOCKQ_LEASE_SECONDS", float, 1),
    ("memory_limit_mb", "STOCKQ_MEMORY_LIMIT_MB", int, 0),
    ("task_output_bytes", "STOCKQ_TASK_OUTPUT_BYTES", int, 0),
    ("task_output_log_bytes", "STOCKQ_TASK_OUTPUT_LOG_BYTES", int, 0),
    ("api_port", "STOCKQ_API_PORT", int, 1),
    ("api_max_body", "STOCKQ_API_MAX_BODY", int, 1024),
    ("tushare_timeout", "STOCKQ_TUSHARE_TIMEOUT", float, 0.1),
    ("query_max_rows", "STOCKQ_QUERY_MAX_ROWS", int, 1),
    ("query_max_bytes", "STOCKQ_QUERY_MAX_BYTES", int, 1024),
    ("query_timeout", "STOCKQ_QUERY_TIMEOUT", float, 0.1),
    ("query_concurrency", "STOCKQ_QUERY_CONCURRENCY", int, 1),
    ("audit_max_rows", "STOCKQ_AUDIT_MAX_ROWS", int, 100),
    ("schedule_grace_seconds", "STOCKQ_SCHEDULE_GRACE_SECONDS", float, 1),
)


def _legacy_redis_url(env: Mapping[str, str]) -> str | None:
    host = env.get("REDIS_HOST")
    if not host:
        return None
    port = env.get("REDIS_PORT", "6379").strip()
    # stock_datasource's own default (its settings.py: db 1, to stay apart from the
    # Langfuse of its deployment in db 0): its producers and stockq meet in one database
    db = env.get("REDIS_DB", "1").strip()
    for name, raw, top in (("REDIS_PORT", port, 65535), ("REDIS_DB", db, 1_000_000)):
        if not raw.isdigit() or not 0 <= int(raw) <= top:
            raise ConfigError(f"{name}={raw!r} must be an integer between 0 and {top}")
    password = env.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def _redis_values(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    url = env.get("STOCKQ_REDIS_URL") or _legacy_redis_url(env)
    if url:
        _check_url(url, "STOCKQ_REDIS_URL" if env.get("STOCKQ_REDIS_URL") else "REDIS_HOST")
        values["redis_url"] = url
    for name in ("STOCKQ_REDIS_ENABLED", "REDIS_ENABLED"):
        if env.get(name, "").strip():
            values["redis_enabled"] = _bool(name, env[name])
            break
    namespace = env.get("STOCKQ_NAMESPACE")
    prefix = env.get("STOCKQ_KEY_PREFIX")  # its earlier name
    if namespace is not None:
        if not NAMESPACE_PATTERN.fullmatch(namespace):
            raise ConfigError(f"STOCKQ_NAMESPACE={namespace!r} must be 1-64 letters, digits, "
                              "'_', '.' or '-'")
        if prefix is not None and prefix != namespace:
            raise ConfigError(f"STOCKQ_NAMESPACE={namespace!r} and STOCKQ_KEY_PREFIX="
                              f"{prefix!r} disagree: set only STOCKQ_NAMESPACE")
        values["key_prefix"] = namespace
    elif prefix is not None:
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigError("STOCKQ_KEY_PREFIX must be a non-empty word without spaces")
        values["key_prefix"] = prefix
    return values


def use_namespace(name: str) -> None:
    """``stockq --namespace NAME``: this process and the processes it starts (worker
    children) use ``NAME`` whatever the environment says (ConfigError when invalid)."""
    if not NAMESPACE_PATTERN.fullmatch(name):
        raise ConfigError(f"namespace {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    set_namespace(os.environ, name)


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    value = raw.strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}")
    return value


def _proxy_values(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    url = env.get("STOCKQ_HTTP_PROXY", "").strip()
    if not url and _bool("HTTP_PROXY_ENABLED", env.get("HTTP_PROXY_ENABLED", "false")):
        host = env.get("HTTP_PROXY_HOST", "").strip()
        port = env.get("HTTP_PROXY_PORT", "").strip()
        if not host or not port.isdigit():
            raise ConfigError("HTTP_PROXY_ENABLED=true needs HTTP_PROXY_HOST and a numeric "
                              "HTTP_PROXY_PORT")
        user = env.get("HTTP_PROXY_USERNAME", "")
        auth = ""
        if user:
            auth = quote(user, safe="") + ":" + quote(env.get("HTTP_PROXY_PASSWORD", ""),
                                                      safe="") + "@"
        url = f"http://{auth}{host}:{port}"
    if url:
        if urlsplit(url).scheme not in {"http", "https", "socks5", "socks5h"}:
            raise ConfigError(f"STOCKQ_HTTP_PROXY={redact_url(url)!r} must be an http(s):// URL")
        values["http_proxy"] = url
    if env.get("STOCKQ_NO_PROXY"):
        values["no_proxy"] = tuple(h.strip() for h in env["STOCKQ_NO_PROXY"].split(",")
                                   if h.strip())
    return values


def _data_source_values(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    url = env.get("STOCKQ_TUSHARE_URL", "").strip()
    if url:
        if urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).hostname:
            raise ConfigError(f"STOCKQ_TUSHARE_URL={url!r} must be an http(s):// URL")
        values["tushare_url"] = url.rstrip("/")
    if env.get("STOCKQ_BUILTIN_PLUGINS", "").strip():
        values["builtin_plugins"] = _bool("STOCKQ_BUILTIN_PLUGINS", env["STOCKQ_BUILTIN_PLUGINS"])
    ch = env.get("STOCKQ_CLICKHOUSE_URL", "").strip()
    if ch:
        scheme = urlsplit(ch).scheme
        if scheme not in {"http", "https", "clickhouse", "chdb"}:
            raise ConfigError(f"STOCKQ_CLICKHOUSE_URL={redact_url(ch)!r} must be a server URL "
                              "(http://host:8123) or chdb:///abs/path")
        values["clickhouse_url"] = ch
    reader = env.get("STOCKQ_CLICKHOUSE_QUERY_URL", "").strip()
    if reader:
        if urlsplit(reader).scheme not in {"http", "https", "clickhouse"}:
            raise ConfigError(f"STOCKQ_CLICKHOUSE_QUERY_URL={redact_url(reader)!r} must be "
                              "the server URL of a read-only user (http://reader@host:8123)")
        values["clickhouse_query_url"] = reader
    token = env.get("STOCKQ_TUSHARE_TOKEN") or env.get("TUSHARE_TOKEN") or ""
    if token.strip():
        values["tushare_token"] = token.strip()
    return values


def _scheduler_values(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    tz = env.get("STOCKQ_TIMEZONE", "").strip()
    if tz:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ConfigError(f"STOCKQ_TIMEZONE={tz!r} is not a known time zone "
                              "(e.g. Asia/Shanghai)") from None
        values["timezone"] = tz
    for name, key in (("STOCKQ_DAILY_SYNC_CRON", "daily_sync_cron"),
                      ("STOCKQ_WEEKLY_SYNC_CRON", "weekly_sync_cron"),
                      ("STOCKQ_MONTHLY_SYNC_CRON", "monthly_sync_cron")):
        cron = env.get(name, "").strip()
        if cron:
            values[key] = cron  # checked by app.scheduler.triggers at start-up
    if env.get("STOCKQ_CATCH_UP_WINDOW_HOURS"):
        hours = _number("STOCKQ_CATCH_UP_WINDOW_HOURS", env["STOCKQ_CATCH_UP_WINDOW_HOURS"],
                        float, 0)
        values["catch_up_window_seconds"] = hours * 3600
    ready = env.get("STOCKQ_DATA_READY_TIME", "").strip()
    if ready:
        if not _HH_MM.fullmatch(ready):
            raise ConfigError(f"STOCKQ_DATA_READY_TIME={ready!r} must be a time of day, HH:MM "
                              "(24 h, in STOCKQ_TIMEZONE), e.g. 17:00")
        values["data_ready_time"] = ready
    exchange = env.get("STOCKQ_CALENDAR_EXCHANGE", "").strip().upper()
    if exchange:
        if not exchange.isalnum():
            raise ConfigError(f"STOCKQ_CALENDAR_EXCHANGE={exchange!r} must be an exchange "
                              "code such as SSE or SZSE")
        values["calendar_exchange"] = exchange
    return values


def _api_values(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    if env.get("STOCKQ_API_HOST"):
        values["api_host"] = env["STOCKQ_API_HOST"].strip()
    if env.get("STOCKQ_API_TOKEN"):
        values["api_token"] = env["STOCKQ_API_TOKEN"]
    if env.get("STOCKQ_API_READ_TOKEN"):
        values["api_read_token"] = env["STOCKQ_API_READ_TOKEN"]
    if env.get("STOCKQ_API_CORS_ORIGINS"):
        values["api_cors_origins"] = tuple(
            o.strip() for o in env["STOCKQ_API_CORS_ORIGINS"].split(",") if o.strip())
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    values = _redis_values(env)
    values.update(_proxy_values(env))
    values.update(_data_source_values(env))
    values.update(_scheduler_values(env))
    values.update(_api_values(env))
    if env.get("STOCKQ_DATA_DIR"):
        values["data_dir"] = Path(env["STOCKQ_DATA_DIR"]).expanduser()
    if env.get("STOCKQ_PLUGINS"):
        values["plugins"] = tuple(p.strip() for p in env["STOCKQ_PLUGINS"].split(",") if p.strip())
    level = _choice(env, "STOCKQ_LOG_LEVEL", ("debug", "info", "warning", "error"))
    if level:
        values["log_level"] = level
    fmt = _choice(env, "STOCKQ_LOG_FORMAT", ("auto", "json", "console"))
    if fmt:
        values["log_format"] = fmt
    for attr, name, kind, minimum in _NUMERIC:
        if env.get(name):
            values[attr] = _number(name, env[name], kind, minimum)
    if env.get("STOCKQ_RETENTION_DAYS"):
        days = _number("STOCKQ_RETENTION_DAYS", env["STOCKQ_RETENTION_DAYS"], float, 0.0001)
        values["retention_seconds"] = days * 86400
    settings = replace(Settings(), **values)  # type: ignore[arg-type]
    if settings.default_max_attempts > settings.max_attempts_limit:
        raise ConfigError("STOCKQ_DEFAULT_MAX_ATTEMPTS exceeds STOCKQ_MAX_ATTEMPTS_LIMIT")
    if settings.default_timeout_seconds > settings.max_timeout_seconds:
        raise ConfigError("STOCKQ_DEFAULT_TIMEOUT exceeds STOCKQ_MAX_TIMEOUT")
    return settings


def scrub_proxy_environment() -> list[str]:
    """Remove proxy variables from this process (supervisor, sidecar, scheduler), so
    that Redis, ClickHouse and HTTP clients here never go through a proxy.  Returns the
    names removed."""
    removed = [name for name in PROXY_ENVIRONMENT if name in os.environ]
    for name in removed:
        del os.environ[name]
    return removed


def setting_names() -> list[str]:
    """Attribute names of :class:`Settings` (used by the docs test)."""
    return [f.name for f in fields(Settings)]
