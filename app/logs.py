"""structlog configuration, done once per process.

JSON lines on stderr when stderr is not a terminal (or ``STOCKQ_LOG_FORMAT=json``), a
readable console format otherwise.  Every state change logs one fixed event name (the
catalogue is docs/logging.md); values that look like secrets are redacted.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from app.settings import Settings

_configured = False
_SECRET_KEYS = ("token", "password", "secret", "authorization", "api_key")


_verdicts: dict[str, bool] = {}


def _is_secret(key: str) -> bool:
    verdict = _verdicts.get(key)
    if verdict is None:
        lowered = key.lower()
        verdict = any(s in lowered for s in _SECRET_KEYS) and key != "lease_token"
        if len(_verdicts) < 10_000:
            _verdicts[key] = verdict
    return verdict


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in [k for k in event if _is_secret(k)]:
        event[key] = "***"
    return event


def configure_logging(settings: Settings, *, force: bool = False) -> None:
    """Configure structlog for this process (idempotent unless ``force``)."""
    global _configured
    if _configured and not force:
        return
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str) -> Any:
    """A lazy structlog logger tagged ``component=name`` (bound at first use, so the
    configuration done later at start-up applies)."""
    return structlog.get_logger(component=name)
