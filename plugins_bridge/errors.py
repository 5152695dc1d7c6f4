"""Errors a plugin (or the TuShare client) raises to say how its attempt failed.

The worker classifies any other exception too (:func:`plugins_bridge.runner.classify`),
but raising one of these states the error type, and whether and when to retry, exactly.
"""

from __future__ import annotations


class PluginError(Exception):
    """Base: an attempt failed with ``error_type``."""

    error_type = "plugin_error"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ConfigurationError(PluginError):
    """Missing or invalid configuration (e.g. no TuShare token): not retried."""

    error_type = "config_error"


class BadParameters(PluginError):
    """The task's parameters cannot work: not retried."""

    error_type = "bad_params"


class SchemaError(PluginError):
    """The data does not have the expected shape: not retried."""

    error_type = "schema_error"


class NetworkError(PluginError):
    """Connection failure, timeout or HTTP 5xx talking to a data source: retried."""

    error_type = "network"


class RateLimited(PluginError):
    """The data source's quota is used up: retried after ``retry_after`` seconds."""

    error_type = "rate_limit"
