"""Who may reach the sidecar, and with which token.

The sidecar binds loopback by default.  Beyond loopback it needs ``STOCKQ_API_TOKEN``,
or an operator's explicit ``--insecure-no-auth``: :func:`check_exposure` refuses to
start otherwise (CLI exit 5, before anything is bound).  A token must be a real secret:
:func:`token_problem` refuses the placeholder of ``ops/stockq.env.example`` and tokens
shorter than :data:`MIN_TOKEN_LENGTH`.  The per-request rules (origin, bearer token,
media type) are :func:`guard`, a middleware of :mod:`app.api.app`.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from app.errors import ConfigError
from app.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BIND_HOST = web.AppKey("bind_host", str)  # the address the sidecar listens on (start_api)

MIN_TOKEN_LENGTH = 16
# what ops/stockq.env.example ships (and any "replace-with-…" text left in place)
PLACEHOLDER_TOKENS = frozenset({"replace-with-a-long-random-string"})
_PLACEHOLDER_PREFIX = "replace-with-"
GENERATE = "generate one with `openssl rand -hex 32`"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPE = "application/json"
# what a page may send cross-site without a CORS preflight (an HTML form, text/plain)
SIMPLE_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data",
                          "text/plain"})
API_PREFIX = "/api/v1"
# what the bearer token guards: the API, and stock_datasource's routes stockq serves
TOKEN_PREFIXES = (API_PREFIX, "/api/datamanage")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the sidecar on this machine: 127.0.0.0/8, ::1 (also
    IPv4-mapped) or ``localhost``.  Every other value, including the all-interfaces
    addresses ``0.0.0.0``, ``::`` and ``""`` and any other host name, is not."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be the sidecar's bearer token, or None when it can."""
    if token in PLACEHOLDER_TOKENS or token.lower().startswith(_PLACEHOLDER_PREFIX):
        return (f"STOCKQ_API_TOKEN is the placeholder of ops/stockq.env.example, not a "
                f"secret: {GENERATE}")
    if len(token) < MIN_TOKEN_LENGTH:
        return (f"STOCKQ_API_TOKEN is {len(token)} characters long; a bearer token needs at "
                f"least {MIN_TOKEN_LENGTH}: {GENERATE}")
    if not all("!" <= c <= "~" for c in token):
        return ("STOCKQ_API_TOKEN holds a space, a control or a non-ASCII character, which "
                f"an Authorization header cannot carry intact: {GENERATE}")
    return None


def check_token(token: str) -> None:
    """ConfigError when a token is set but is not a usable secret."""
    problem = token_problem(token) if token else None
    if problem:
        raise ConfigError(problem)


def check_read_token(settings: Settings) -> None:
    """ConfigError for a read-only token that is weak, equals the full token, or comes
    without one (with no STOCKQ_API_TOKEN, /api/v1 is open to everyone anyway)."""
    read = settings.api_read_token
    if not read:
        return
    if not settings.api_token:
        raise ConfigError("STOCKQ_API_READ_TOKEN is set without STOCKQ_API_TOKEN: the API "
                          "needs no token at all then; set STOCKQ_API_TOKEN too")
    if read == settings.api_token:
        raise ConfigError("STOCKQ_API_READ_TOKEN equals STOCKQ_API_TOKEN: give the "
                          f"read-only token a value of its own ({GENERATE})")
    problem = token_problem(read)
    if problem:
        raise ConfigError(problem.replace("STOCKQ_API_TOKEN", "STOCKQ_API_READ_TOKEN"))


ACCESS = web.RequestKey("stockq_access", str)  # "read" for the read-only token


def access_of(request: web.Request) -> str:
    """What the request's token may do: ``full`` (the token, or no token configured)
    or ``read`` (STOCKQ_API_READ_TOKEN: GET, HEAD and OPTIONS only)."""
    return str(request.get(ACCESS, "full"))


def exposed(host: str, token: str) -> bool:
    """The sidecar answers beyond loopback without a token."""
    return not token and not is_loopback(host)


def check_exposure(host: str, token: str, *, insecure_no_auth: bool) -> None:
    """Refuse (ConfigError, one line) a sidecar that would answer beyond loopback without
    a token, unless the operator passed ``--insecure-no-auth``; refuse a weak token."""
    check_token(token)
    if exposed(host, token) and not insecure_no_auth:
        shown = host if host.strip() else "every interface"
        raise ConfigError(
            f"the sidecar would listen on {shown} (beyond loopback) without a token: set "
            "STOCKQ_API_TOKEN (e.g. `openssl rand -hex 32`), or bind 127.0.0.1 (--host or "
            "STOCKQ_API_HOST), or pass --insecure-no-auth")


def _refuse(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers or None)


def guard(settings: Settings) -> Middleware:
    """The middleware that runs before every handler, in this order:

    1. a change (any method but GET/HEAD/OPTIONS) whose ``Origin`` is neither this
       sidecar's own (scheme://Host of the request) nor listed in
       STOCKQ_API_CORS_ORIGINS is refused (403 ``cross_origin_refused``): a web page
       on another site cannot drive the API through the operator's browser;
    2. with STOCKQ_API_TOKEN set, ``/api/v1`` and ``/api/datamanage`` need
       ``Authorization: Bearer <token>``
       (the scheme in any case, RFC 7235; the token compared in constant time), or
       the read-only STOCKQ_API_READ_TOKEN, which a change is refused with (403
       ``read_only_token``);
    3. a change with a body needs ``Content-Type: application/json`` (415
       ``unsupported_media_type``), a type no page can send cross-site without a CORS
       preflight.  A change without a body (cancel, retry, run) passes, unless it is
       typed as a form or ``text/plain`` (what a page can send).

    Requests without an Origin (curl, the CLI, scripts) are not affected by 1."""
    token = settings.api_token.encode() if settings.api_token else b""
    read_token = settings.api_read_token.encode() if settings.api_read_token else b""
    origins = frozenset(settings.api_cors_origins)
    any_origin = "*" in origins

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        changes = request.method not in SAFE_METHODS
        if changes:
            origin = request.headers.get("Origin")
            if origin is not None and not any_origin and origin not in origins:
                own = f"{request.scheme}://{request.headers.get('Host', '')}"
                if origin.lower() != own.lower():
                    return _refuse(
                        403, "cross_origin_refused",
                        f"cross-origin request refused: Origin {origin[:200]!r} is neither "
                        f"this sidecar ({own[:200]}) nor listed in STOCKQ_API_CORS_ORIGINS")
        if token and request.method != "OPTIONS" and request.path.startswith(TOKEN_PREFIXES):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            offered = given.lstrip(" ").encode("utf-8", "surrogateescape")
            bearer = scheme.lower() == "bearer"
            full = hmac.compare_digest(offered, token)
            read = bool(read_token) and hmac.compare_digest(offered, read_token)
            if not (bearer and (full or read)):
                return _refuse(401, "unauthorized", "missing or wrong bearer token",
                               **{"WWW-Authenticate": "Bearer"})
            if not full:
                if changes:
                    return _refuse(403, "read_only_token", "this token may only read "
                                   "(STOCKQ_API_READ_TOKEN); changes need STOCKQ_API_TOKEN")
                request[ACCESS] = "read"
        if changes and request.content_type != JSON_TYPE \
                and request.match_info.http_exception is None \
                and (request.body_exists or request.content_type in SIMPLE_TYPES):
            sent = request.headers.get("Content-Type", "")
            got = f"got {sent[:100]!r}" if sent else "it had none"
            return _refuse(415, "unsupported_media_type", "send the body as JSON with "
                           f"Content-Type: application/json ({got})")
        return await handler(request)

    return guard
