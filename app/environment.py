"""The process environment's proxy variables and namespace, and the environment
worker children start with.  Imports nothing but ``os``: ``stockq worker`` computes a child's
environment before anything else is imported (app/entry.py)."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # (``typing`` is not imported before a worker's fork server starts)
if TYPE_CHECKING:
    from collections.abc import MutableMapping

PROXY_ENVIRONMENT = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                     "all_proxy")


def child_environment() -> dict[str, str]:
    """The environment a worker child starts with: this one without proxy variables
    (the child sets them only while a task runs)."""
    return {k: v for k, v in os.environ.items() if k not in PROXY_ENVIRONMENT}


def set_namespace(env: MutableMapping[str, str], name: str) -> None:
    """Make ``env`` (``os.environ``, or a child's environment) name ``name`` as the key
    namespace, whatever STOCKQ_KEY_PREFIX said."""
    env["STOCKQ_NAMESPACE"] = name
    env.pop("STOCKQ_KEY_PREFIX", None)
