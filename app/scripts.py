"""The Lua transition scripts, loaded once and called in one round trip each.

Each transition lives in its own file under ``app/lua/`` with its KEYS/ARGV layout
documented at the top.  At load time every script is prefixed with the key prelude
(:func:`app.keys.lua_prelude`) and the shared helpers in ``lib.lua``.  Script errors
raised on purpose start with ``STOCKQ <code>`` and are mapped to the error tree.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from app.errors import (
    Conflict,
    IllegalTransition,
    NotFound,
    StaleLease,
    StockqError,
)
from app.keys import lua_prelude
from app.redis_client import redis_errors
from app.settings import Settings

TRANSITIONS = (
    "enqueue",
    "claim",
    "progress",
    "complete",
    "fail",
    "cancel",
    "acknowledge_cancel",
    "reap",
    "requeue",
    "renew",
    "retry",
    "delete",
    "create_execution",
    "cleanup",
)


def _read(name: str) -> str:
    return resources.files("app").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@cache
def script_source(name: str) -> str:
    """Full source of a transition: prelude + lib.lua + the transition file."""
    if name not in TRANSITIONS:
        raise KeyError(name)
    return f"{lua_prelude()}\n{_read('lib')}\n{_read(name)}"


_CODES: dict[str, type[StockqError]] = {
    "illegal_transition": IllegalTransition,
    "stale_lease": StaleLease,
    "not_found": NotFound,
    "conflict": Conflict,
}


def map_response_error(exc: ResponseError) -> StockqError | None:
    """Turn a script's ``STOCKQ <code> <message>`` error into a stockq error."""
    text = str(exc)
    marker = text.find("STOCKQ ")
    if marker < 0:
        return None
    _, code, message = (text[marker:].split(" ", 2) + ["", ""])[:3]
    message = message.split(" script: ")[0]
    cls = _CODES.get(code)
    if cls is None:
        return StockqError(message)
    return cls(message)


class Scripts:
    """Registered scripts bound to one async Redis client."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(script_source(name)) for name in TRANSITIONS
        }

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        with redis_errors(self._settings):
            try:
                return await self._scripts[name](keys=keys, args=args, client=self._client)
            except ResponseError as exc:
                mapped = map_response_error(exc)
                if mapped is not None:
                    raise mapped from None
                raise
