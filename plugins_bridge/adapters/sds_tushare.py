"""The ``tushare`` package as stock_datasource's plugins use it, made to behave like
stockq's own TuShare access.  :func:`install` changes two things in this process:

* **the token stays in memory.**  ``tushare.set_token()`` writes ``~/tk.csv`` (the token
  in plain text) and ``pro_api()`` reads it back; every process that imports those
  plugins calls it.  Here ``set_token`` keeps the token in this process and
  ``get_token`` returns it, so nothing is written to the operator's home.
* **calls made while a task runs an adapted plugin** (:func:`calls_of`) go through
  :class:`plugins_bridge.tushare.TushareClient` instead of ``DataApi.query``: each one
  first takes its place in the shared per-token quota (the worker's supervisor asks
  Redis; the plugin's ``rate_limit`` per minute), goes to ``STOCKQ_TUSHARE_URL``
  through the task's proxy (:func:`plugins_bridge.proxy.active_proxy`, passed to
  ``requests`` explicitly: the plugins' own ``proxy_context()`` removes the proxy
  variables around each call) and raises on HTTP errors (``DataApi`` returns an empty
  frame).  The reply is the same ``DataFrame`` of the first page.  The errors raised
  are recorded, so a failed result can be classified by its real cause.

Outside a task (discovery, a notebook) ``DataApi.query`` is the package's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from plugins_bridge import services
from plugins_bridge.errors import PluginError
from plugins_bridge.proxy import active_proxy

DEFAULT_RATE_LIMIT = 120  # BasePlugin.api_rate_limit


@dataclass(slots=True)
class PluginCalls:
    """The TuShare calls of one ``run()`` of an adapted plugin."""

    plugin: str
    rate_limit: int
    calls: int = 0
    errors: list[PluginError] = field(default_factory=list)  # since the last success


_active: list[PluginCalls] = []  # process-wide: a plugin may call from its own threads
_token: list[str] = []
_session: list[Any] = []  # one requests.Session (imported at the first call)
_installed: list[bool] = []


def current() -> PluginCalls | None:
    return _active[-1] if _active else None


@contextmanager
def calls_of(plugin: str, rate_limit: int | None) -> Iterator[PluginCalls]:
    """Route this process's TuShare calls for the block (see the module docstring)."""
    calls = PluginCalls(plugin, rate_limit or DEFAULT_RATE_LIMIT)
    _active.append(calls)
    try:
        yield calls
    finally:
        _active.remove(calls)


def _set_token(token: str) -> None:
    _token[:] = [str(token)]


def _get_token() -> str | None:
    return _token[0] if _token else None


def _settings() -> Any:
    from app.settings import load_settings

    return load_settings()


def _query(api: Any, original: Any, api_name: str, fields: Any = "", **params: Any) -> Any:
    calls = current()
    if calls is None:
        return original(api, api_name, fields, **params)
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]  # wherever tushare is

    from plugins_bridge.tushare.client import TushareClient

    if not _session:
        import requests

        session = requests.Session()
        session.trust_env = False  # the proxy is passed explicitly, never the environment
        _session.append(session)
    settings = _settings()
    proxy = active_proxy()
    client = TushareClient(
        settings.tushare_url, str(getattr(api, "_DataApi__token", "") or ""),
        timeout=float(getattr(api, "_DataApi__timeout", 0) or settings.tushare_timeout),
        proxies={"http": proxy, "https": proxy} if proxy else None, session=_session[0],
        acquire=lambda name: services.current().acquire(name, calls.rate_limit))
    calls.calls += 1
    try:
        columns, items = client.table(api_name, params, fields)
    except PluginError as exc:
        calls.errors.append(exc)
        raise
    calls.errors.clear()
    return pd.DataFrame(items, columns=columns)


def install() -> bool:
    """Patch the ``tushare`` package in this process (once); False without it."""
    if _installed:
        return True
    try:
        import tushare  # type: ignore[import-not-found]
        from tushare.pro import client as pro_client  # type: ignore[import-not-found]
        from tushare.util import upass  # type: ignore[import-not-found]
    except ImportError:
        return False
    upass.set_token = _set_token
    upass.get_token = _get_token
    tushare.set_token = _set_token
    tushare.get_token = _get_token
    original = pro_client.DataApi.query

    def query(self: Any, api_name: str, fields: Any = "", **params: Any) -> Any:
        return _query(self, original, api_name, fields, **params)

    pro_client.DataApi.query = query
    _installed.append(True)
    return True
