"""Every setting stockq reads, in one place.

This is the only module that reads ``os.environ``.  Everything else receives a
:class:`Settings` instance (usually from :func:`load_settings`).  Names use the
``STOCKQ_`` prefix; a few names of the system stockq replaces are still honoured
(``REDIS_ENABLED``, ``REDIS_HOST``/``REDIS_PORT``/``REDIS_PASSWORD``/``REDIS_DB``) so an
existing deployment keeps its configuration.  docs/configuration.md lists them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from app.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


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
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs and messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}" if user else f":***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed settings; build with :func:`load_settings` (or directly in tests)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_enabled: bool = True
    redis_connect_timeout: float = 2.0
    key_prefix: str = "stock"
    data_dir: Path = field(default_factory=lambda: Path.home() / ".local/share/stockq")
    plugins: tuple[str, ...] = ()
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
    # leases and retention
    lease_seconds: float = 30.0
    retention_seconds: float = 7 * 24 * 3600.0

    @property
    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url)


# (setting attribute, environment names in order of precedence, parser)
_NUMERIC: tuple[tuple[str, str, type[int] | type[float], float], ...] = (
    ("redis_connect_timeout", "STOCKQ_REDIS_TIMEOUT", float, 0.1),
    ("default_timeout_seconds", "STOCKQ_DEFAULT_TIMEOUT", int, 1),
    ("max_timeout_seconds", "STOCKQ_MAX_TIMEOUT", int, 1),
    ("default_max_attempts", "STOCKQ_DEFAULT_MAX_ATTEMPTS", int, 1),
    ("max_attempts_limit", "STOCKQ_MAX_ATTEMPTS_LIMIT", int, 1),
    ("max_trade_dates", "STOCKQ_MAX_TRADE_DATES", int, 1),
    ("max_execution_tasks", "STOCKQ_MAX_EXECUTION_TASKS", int, 1),
    ("retry_base_seconds", "STOCKQ_RETRY_BASE_SECONDS", float, 0),
    ("retry_max_seconds", "STOCKQ_RETRY_MAX_SECONDS", float, 0),
    ("lease_seconds", "STOCKQ_LEASE_SECONDS", float, 1),
)


def _legacy_redis_url(env: Mapping[str, str]) -> str | None:
    host = env.get("REDIS_HOST")
    if not host:
        return None
    port = env.get("REDIS_PORT", "6379")
    db = env.get("REDIS_DB", "0")
    password = env.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def _redis_values(env: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    url = env.get("STOCKQ_REDIS_URL") or _legacy_redis_url(env)
    if url:
        if urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
            raise ConfigError(
                f"STOCKQ_REDIS_URL={redact_url(url)!r} must start with redis://, rediss:// or unix://"
            )
        values["redis_url"] = url
    for name in ("STOCKQ_REDIS_ENABLED", "REDIS_ENABLED"):
        if name in env:
            values["redis_enabled"] = _bool(name, env[name])
            break
    prefix = env.get("STOCKQ_KEY_PREFIX")
    if prefix is not None:
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigError("STOCKQ_KEY_PREFIX must be a non-empty word without spaces")
        values["key_prefix"] = prefix
    return values


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    value = raw.strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}")
    return value


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    values = _redis_values(env)
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
    return settings


def setting_names() -> list[str]:
    """Attribute names of :class:`Settings` (used by the docs test)."""
    return [f.name for f in fields(Settings)]
