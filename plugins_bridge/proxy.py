"""The TuShare HTTP proxy, applied only while a task runs, only inside a worker child.

``requests`` (and so ``tushare``) reads ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` from
the process environment on every call.  :func:`proxy_context` sets them (both cases)
for the duration of one plugin run and restores the previous environment afterwards;
``NO_PROXY`` always covers loopback and the Redis and ClickHouse hosts.  The supervisor
and the sidecar never set them (their environment is scrubbed at start-up, see
:func:`app.settings.scrub_proxy_environment`).

:func:`active_proxy` names the proxy of the innermost block in force: code that must not
depend on the environment (a plugin may change it, as stock_datasource's own
``proxy_context()`` does) passes it to ``requests`` explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_VARS = ("NO_PROXY", "no_proxy")
LOOPBACK = ("localhost", "127.0.0.1", "::1")
_active: list[str] = []  # the proxies of the blocks in force, innermost last


def active_proxy() -> str | None:
    """The proxy URL of the innermost :func:`proxy_context` in force, else None."""
    return _active[-1] if _active else None


@contextmanager
def proxy_context(proxy_url: str | None = None,
                  no_proxy_hosts: Iterable[str] | None = None) -> Iterator[str | None]:
    """Set the proxy variables for the block; yields the proxy URL in force (or None).

    Without arguments the proxy comes from the settings (``STOCKQ_HTTP_PROXY``, or the
    original ``HTTP_PROXY_ENABLED``/``HTTP_PROXY_HOST``/``HTTP_PROXY_PORT``) and the
    bypass list from the Redis and ClickHouse URLs.
    """
    if proxy_url is None and no_proxy_hosts is None:
        from app.settings import load_settings

        settings = load_settings()
        proxy_url = settings.http_proxy
        no_proxy_hosts = settings.no_proxy_hosts
    if not proxy_url:
        yield None
        return
    saved = {name: os.environ.get(name) for name in PROXY_VARS + NO_PROXY_VARS}
    bypass = list(dict.fromkeys([*LOOPBACK, *(no_proxy_hosts or ())]))
    _active.append(proxy_url)
    try:
        for name in PROXY_VARS:
            os.environ[name] = proxy_url
        for name in NO_PROXY_VARS:
            os.environ[name] = ",".join(bypass)
        yield proxy_url
    finally:
        _active.pop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
