"""What aiohttp answers by itself, before any route or middleware runs.

A request aiohttp cannot parse (a request line or a header over the limits below, an
unknown or invalid method, broken framing) is answered by its connection handler with
a plain-text 400 and a multi-line traceback on stderr through the stdlib logger
``aiohttp.server``.  :class:`SidecarRunner` (what :func:`app.daemon.start_api` serves
with) gives those answers the API's shape, ``{"error": {"code": "bad_request",
"message": ...}}`` with the status that fits (400, 414 for the request line, 431 for
headers), and logs one ``api.bad_request`` line instead.  The connection handler's
other stdlib log records become one ``api.server_error`` line each.
"""

from __future__ import annotations

import json
import logging

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from app.logs import get_logger

log = get_logger("stockq.api")

MAX_LINE = 8190  # bytes in the request line (method, URL, version): aiohttp's default
# bytes in one header line; different from MAX_LINE, so that the limit a LineTooLong
# names tells the request line (414) from a header (431)
MAX_FIELD = 8192
MAX_HEADERS = 128


def describe(exc: BaseException | None) -> tuple[int, str]:
    """The status and message for a request aiohttp could not parse."""
    if isinstance(exc, http_exceptions.LineTooLong):
        if len(exc.args) > 1 and exc.args[1] == MAX_FIELD:
            return 431, f"a request header is longer than {MAX_FIELD} bytes"
        return 414, f"the request line (method, URL, version) is longer than {MAX_LINE} bytes"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        if "HTTPS" in exc.message:
            return 400, "TLS (https://) traffic on the sidecar's plain HTTP port"
        return 400, "the request method is not a valid HTTP method"
    if isinstance(exc, http_exceptions.BadHttpMessage) and "Too many headers" in exc.message:
        return 431, f"more than {MAX_HEADERS} request headers"
    if isinstance(exc, http_exceptions.InvalidURLError):
        return 400, "the request target is not a valid URL"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return 400, "a request header is malformed"
    if isinstance(exc, http_exceptions.PayloadEncodingError):
        return 400, "the request body's framing is malformed"
    # the parser's own words (e.g. "Invalid header token"), never the bytes it quotes
    first = exc.message.split("\n", 1)[0].rstrip(": ") \
        if isinstance(exc, http_exceptions.HttpProcessingError) else ""
    if first and len(first) < 100 and "b'" not in first and 'b"' not in first:
        return 400, f"malformed HTTP request ({first})"
    return 400, "malformed HTTP request"


class JsonErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors as the API does."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 500:
            code, text = "internal_error", "internal error (see the sidecar's log)"
            log.error("api.internal_error", method=request.method, path=request.path,
                      exc_info=exc)
        elif status == 504:
            code, text = "timeout", "the request took too long"
            log.error("api.internal_error", method=request.method, path=request.path,
                      error="handler timed out")
        else:
            code = "bad_request"
            status, text = describe(exc)
            log.warning("api.bad_request", status=status, message=text,
                        error=type(exc).__name__ if exc is not None else None,
                        remote=request.remote)
        if request.writer.output_size > 0:  # as aiohttp: the connection is broken
            raise ConnectionError("the response was already started; cannot send the error")
        body = json.dumps({"error": {"code": code, "message": text}})
        response = web.Response(status=status, text=body, content_type="application/json")
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class _OneLine(logging.Handler):
    """The connection handler's stdlib records as one JSON log line, no traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        log.error("api.server_error", message=record.getMessage()[:500], error=error)


SERVER_LOG = logging.getLogger("stockq.api.server")
SERVER_LOG.propagate = False
SERVER_LOG.setLevel(logging.WARNING)
if not SERVER_LOG.handlers:
    SERVER_LOG.addHandler(_OneLine())


class SidecarRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer protocol errors as JSON and log
    through structlog (no access log: the ``access_log`` middleware writes one)."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(app, access_log=None, handle_signals=False, logger=SERVER_LOG,
                         max_line_size=MAX_LINE, max_field_size=MAX_FIELD,
                         max_headers=MAX_HEADERS)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _Server(server.request_handler, request_factory=server.request_factory,
                       **self._kwargs)
