"""A TuShare Pro HTTP client on ``requests`` that turns every failure into an error.

The official ``tushare`` package returns an empty frame when the HTTP status is 400 or
more; here an HTTP error is always raised, never returned as an empty result.  The
protocol: ``POST {base_url}/{api_name}`` with the JSON body
``{"api_name", "token", "params", "fields"}``; the reply is
``{"code": 0, "msg": "", "data": {"fields": [...], "items": [[...]], "has_more": bool}}``.

Every error is a :class:`TushareError` and also one of :mod:`plugins_bridge.errors`, so
the worker retries (or not) without knowing TuShare:

- :class:`TushareTokenError` (``config_error``, not retried): no token, or TuShare
  rejects it (codes 40101, 40001, -2001, or "token" in the message);
- :class:`TusharePermissionError` (``config_error``, not retried): no access to the API
  or too few points (more points are a human's job);
- :class:`TushareBadRequest` (``bad_params``, not retried): wrong parameters or API name;
- :class:`TushareRateLimited` (``rate_limit``, retried after ``retry_after``): quota
  replies (60 s per minute, 3600 s per hour and per day, see :data:`PER_HOUR_WAIT`) and
  HTTP 429 (its ``Retry-After`` seconds, else 60);
- :class:`TushareNetworkError` (``network``, retried): connection refused or reset,
  timeout, any other HTTP 4xx or 5xx, a body that is not JSON;
- :class:`TushareSchemaError` (``schema_error``, not retried): JSON of the wrong shape;
- :class:`TushareApiError` (``tushare_error``, retried): any other non-zero ``code``; an
  unknown error type counts as transient in :func:`app.failures.is_retryable`, and the
  task's max attempts bound the cost, while the known permanent cases above fail at once.

Code 40203 is used both for quota and for permission replies, so the message decides.

The token never appears in a message (it is replaced by ``***`` if the server echoes
it) and this module logs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from plugins_bridge.errors import (
    BadParameters,
    ConfigurationError,
    NetworkError,
    PluginError,
    RateLimited,
    SchemaError,
)

if TYPE_CHECKING:
    import requests

    from app.settings import Settings

DEFAULT_URL = "http://api.waditu.com/dataapi"
RATE_LIMIT_WAIT = 60.0
#: TuShare's per-day quota resets at midnight; waiting that long would park a task for
#: most of a day, so a per-day message is retried after an hour like a per-hour one
#: (each retry costs one request, and the task's max attempts bound them).
PER_HOUR_WAIT = 3600.0
TOKEN_CODES = frozenset({40101, 40001, -2001})
PERMISSION_CODE = 40203
_RATE_WAITS = (
    (re.compile(r"每小时最多访问|per hour", re.IGNORECASE), PER_HOUR_WAIT),
    (re.compile(r"每天最多访问|per day", re.IGNORECASE), PER_HOUR_WAIT),
    (re.compile(r"每分钟最多访问|频率|\brate\b|too many requests", re.IGNORECASE),
     RATE_LIMIT_WAIT),
)
_PERMISSION_WORDS = re.compile(r"没有访问该接口的权限|积分|权限|permission", re.IGNORECASE)
_BAD_REQUEST_WORDS = re.compile(r"参数|api名称|接口名|param", re.IGNORECASE)
_BODY_SNIPPET = 200


class TushareError(PluginError):
    """Base of the client's errors; ``error_type`` comes from the second base class.

    ``code`` is TuShare's reply code and ``status`` the HTTP status, when known."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 code: int | None = None, status: int | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = code
        self.status = status


class TushareTokenError(TushareError, ConfigurationError):
    """No token configured, or TuShare rejected it: not retried."""


class TusharePermissionError(TushareError, ConfigurationError):
    """The token may not call this API (permission or points): not retried."""


class TushareBadRequest(TushareError, BadParameters):
    """TuShare rejected the parameters or the API name: not retried."""


class TushareRateLimited(TushareError, RateLimited):
    """A TuShare quota is used up: retried after ``retry_after`` seconds."""


class TushareNetworkError(TushareError, NetworkError):
    """Connection failure, timeout, HTTP error or a body that is not JSON: retried."""


class TushareSchemaError(TushareError, SchemaError):
    """A JSON reply that is not shaped like TuShare's: not retried."""


class TushareApiError(TushareError):
    """Any other non-zero TuShare code: retried (an unknown error type is transient)."""

    error_type = "tushare_error"


def rate_limit_wait(message: str) -> float | None:
    """Seconds to wait for a TuShare quota message, or None if it is not one."""
    for pattern, wait in _RATE_WAITS:
        if pattern.search(message):
            return wait
    return None


def error_for_code(code: int, message: str) -> TushareError:
    """The error for a reply with a non-zero ``code`` (``message`` already redacted).

    Code 40203 covers both quota and permission replies, so the message decides."""
    text = f"TuShare error {code}: {message}"
    wait = rate_limit_wait(message)
    if wait is not None:
        return TushareRateLimited(text, retry_after=wait, code=code)
    if code in TOKEN_CODES or "token" in message.lower():
        return TushareTokenError(f"{text} (check TUSHARE_TOKEN)", code=code)
    if code == PERMISSION_CODE or _PERMISSION_WORDS.search(message):
        return TusharePermissionError(text, code=code)
    if _BAD_REQUEST_WORDS.search(message):
        return TushareBadRequest(text, code=code)
    return TushareApiError(text, code=code)


def _retry_after(header: str | None) -> float:
    try:
        value = float(header or "")
    except ValueError:  # absent, or an HTTP date
        return RATE_LIMIT_WAIT
    return value if value >= 0 else RATE_LIMIT_WAIT


class _Page(NamedTuple):
    rows: list[dict[str, Any]]
    has_more: bool
    columns: list[str]


class TushareClient:
    """Calls TuShare Pro APIs; see the module docstring for the errors it raises.

    ``proxies`` is passed to every request when given; when None nothing is passed, so
    ``requests`` uses the environment (which :func:`plugins_bridge.proxy.proxy_context`
    sets while a task runs).  ``acquire(api_name)``, when given, is called before every
    request and blocks until the shared quota admits it (inside a worker it asks the
    supervisor, see :mod:`plugins_bridge.services`).  A session given by the caller is
    not closed by :meth:`close`."""

    max_pages = 10_000  # a server that always says has_more cannot loop forever

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0,
                 proxies: dict[str, str] | None = None,
                 session: requests.Session | None = None,
                 acquire: Callable[[str], None] | None = None) -> None:
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")
        self.acquire = acquire
        self.token = token.strip()
        self.timeout = timeout
        self.proxies = proxies
        self._own_session = session is None
        if session is None:
            import requests  # at the first client: a worker's fork server defers it

            session = requests.Session()
        self.session = session

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      proxies: dict[str, str] | None = None) -> TushareClient:
        return cls(settings.tushare_url, settings.tushare_token,
                   timeout=settings.tushare_timeout, proxies=proxies)

    def __repr__(self) -> str:
        return f"TushareClient({self.base_url!r}, token={'***' if self.token else ''!r})"

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def query(self, api_name: str, params: Mapping[str, Any] | None = None,
              fields: Sequence[str] | str = "", *,
              page_size: int | None = None) -> list[dict[str, Any]]:
        """Rows of ``api_name`` as dicts, following ``has_more`` to the last page.

        With ``page_size`` each request asks for ``limit=page_size`` rows from
        ``offset``; without it the first request goes as given and, if TuShare says
        ``has_more``, the next ones ask from ``offset`` = rows so far.  Stops at an
        empty page."""
        if not self.token:
            raise TushareTokenError("TuShare token is not set: set TUSHARE_TOKEN "
                                    "(or STOCKQ_TUSHARE_TOKEN)")
        if page_size is not None and page_size < 1:
            raise TushareBadRequest(f"page_size must be at least 1, not {page_size}")
        fields_text = fields if isinstance(fields, str) else ",".join(fields)
        send = dict(params or {})
        offset = int(send.get("offset") or 0)
        if page_size is not None:
            send.update(limit=page_size, offset=offset)
        rows: list[dict[str, Any]] = []
        for _ in range(self.max_pages):
            page = self._request(api_name, send, fields_text)
            rows += page.rows
            if not page.has_more or not page.rows:
                return rows
            offset += len(page.rows)
            send = {**send, "offset": offset}
        raise TushareSchemaError(f"TuShare {api_name}: still has_more after "
                                 f"{self.max_pages} pages")

    def _redact(self, text: str) -> str:
        return text.replace(self.token, "***") if self.token else text

    def table(self, api_name: str, params: Mapping[str, Any] | None = None,
              fields: Sequence[str] | str = "") -> tuple[list[str], list[list[Any]]]:
        """One request, as the ``tushare`` package makes it: ``(fields, items)`` of the
        reply's first page (``has_more`` is not followed), errors raised as above."""
        if not self.token:
            raise TushareTokenError("TuShare token is not set: set TUSHARE_TOKEN "
                                    "(or STOCKQ_TUSHARE_TOKEN)")
        fields_text = fields if isinstance(fields, str) else ",".join(fields)
        page = self._request(api_name, dict(params or {}), fields_text)
        return page.columns, [[row[c] for c in page.columns] for row in page.rows]

    def _request(self, api_name: str, params: dict[str, Any], fields: str) -> _Page:
        body: dict[str, Any] = {"api_name": api_name, "token": self.token, "params": params,
                                "fields": fields}
        extra: dict[str, Any] = {} if self.proxies is None else {"proxies": self.proxies}
        if self.acquire is not None:
            self.acquire(api_name)
        import requests

        try:
            response = self.session.post(f"{self.base_url}/{api_name}", json=body,
                                         timeout=self.timeout, **extra)
        except requests.Timeout as exc:
            raise TushareNetworkError(f"TuShare {api_name}: no reply within "
                                      f"{self.timeout:g}s ({type(exc).__name__})") from exc
        except requests.RequestException as exc:
            raise TushareNetworkError(
                self._redact(f"TuShare {api_name}: {type(exc).__name__}: {exc}")) from exc
        with response:
            return self._page(api_name, response)

    def _page(self, api_name: str, response: requests.Response) -> _Page:
        status = response.status_code
        if status == 429:
            raise TushareRateLimited(
                f"TuShare {api_name}: HTTP 429 Too Many Requests",
                retry_after=_retry_after(response.headers.get("Retry-After")), status=status)
        if not 200 <= status < 300:
            snippet = self._redact(response.text[:_BODY_SNIPPET]).strip()
            raise TushareNetworkError(
                f"TuShare {api_name}: HTTP {status} {response.reason or ''}".rstrip()
                + (f": {snippet}" if snippet else ""), status=status)
        try:
            payload = response.json()
        except ValueError:
            snippet = self._redact(response.text[:_BODY_SNIPPET]).strip()
            raise TushareNetworkError(f"TuShare {api_name}: reply is not JSON: {snippet!r}",
                                      status=status) from None
        return self._parse(api_name, payload)

    def _parse(self, api_name: str, payload: Any) -> _Page:
        code = payload.get("code") if isinstance(payload, dict) else None
        if not isinstance(code, int):
            raise TushareSchemaError(f"TuShare {api_name}: reply has no integer code")
        if code != 0:
            raise error_for_code(code, self._redact(str(payload.get("msg") or "")))
        data = payload.get("data")
        columns = data.get("fields") if isinstance(data, dict) else None
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(columns, list) or not isinstance(items, list) or \
                not all(isinstance(c, str) for c in columns):
            raise TushareSchemaError(f"TuShare {api_name}: reply data lacks fields/items")
        rows: list[dict[str, Any]] = []
        for item in items:
            if not isinstance(item, list) or len(item) != len(columns):
                raise TushareSchemaError(f"TuShare {api_name}: a row does not match the "
                                         f"{len(columns)} fields")
            rows.append(dict(zip(columns, item, strict=True)))
        return _Page(rows, bool(data.get("has_more")), list(columns))
