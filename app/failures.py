"""Error classes of failed attempts: which are retried, and how messages are bounded."""

from __future__ import annotations

import re

# Errors that cannot succeed on a retry: fail the task at once.
NON_RETRYABLE = frozenset(
    {
        "plugin_not_found",
        "config_error",
        "bad_params",
        "schema_error",
        "invalid_result",
        "plugin_error",
        # an allocation past the task's memory limit: the same work asks for the same
        # memory again (raise the limit, then retry the task by hand)
        "memory_exceeded",
    }
)

MAX_ERROR_MESSAGE = 2000

_SECRET_PATTERNS = (
    re.compile(r"(?i)(token|password|passwd|secret|api[_-]?key)(\"?\s*[:=]\s*\"?)([^\s\"'&,}]+)"),
    re.compile(r"(?i)(://[^:/@\s]+:)([^@\s]+)(@)"),
)


def is_retryable(error_type: str) -> bool:
    """Unknown error types are retried: a transient failure is the safer guess."""
    return error_type not in NON_RETRYABLE


def redact(text: str) -> str:
    """Mask values that look like credentials (token=..., user:password@host)."""
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)}***{m.group(3)}", text)


def bound_message(text: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    """Redacted and cut to ``limit`` characters."""
    clean = redact(text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
