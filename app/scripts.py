"""The Lua transition scripts, loaded once and called in one round trip each.

Each transition lives in its own file under ``app/lua/`` with its KEYS/ARGV layout
documented at the top.  At load time every script is prefixed with the key prelude
(:func:`app.keys.lua_prelude`) and the shared helpers in ``lib.lua``.  Script errors
raised on purpose start with ``STOCKQ <code>`` and are mapped to the error tree.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from app.errors import (
    Conflict,
    IllegalTransition,
    NotFound,
    StaleLease,
    StockqError,
    TaskNotFound,
)
from app.keys import lua_prelude
from app.redis_client import redis_errors
from app.script_channel import ScriptChannel
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
    "heartbeat",
    "record_fire",
    "promote",
    "quota",
    "recover_claim",
    "delete_execution",
    "purge",
)


def _read(name: str) -> str:
    return resources.files("app").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


_DEFINITION = re.compile(r"^local (?:function )?([A-Za-z_][\w, ]*?)\s*(?:=|\()")
_WORD = re.compile(r"[A-Za-z_]\w*")


def _definitions(source: str) -> list[tuple[frozenset[str], str]]:
    """Split Lua source into top-level definitions: each ``local`` statement at column 0
    runs until the next one; the comment lines just above a definition belong to it.
    Returns (names defined, text) in source order (text above the first definition is
    dropped)."""
    blocks: list[tuple[frozenset[str], str]] = []
    names: frozenset[str] | None = None
    lines: list[str] = []
    for line in source.splitlines(keepends=True):
        m = _DEFINITION.match(line)
        if m:
            cut = len(lines)
            while cut > 0 and (not lines[cut - 1].strip()
                               or lines[cut - 1].startswith("--")):
                cut -= 1
            if names is not None:
                blocks.append((names, "".join(lines[:cut])))
            names = frozenset(n.strip() for n in m.group(1).split(","))
            lines = lines[cut:]
        lines.append(line)
    if names is not None:
        blocks.append((names, "".join(lines)))
    return blocks


@cache
def script_source(name: str) -> str:
    """Full source of a transition: the definitions of the key prelude and of lib.lua
    that it uses (directly or through each other), then the transition file.

    A script is run from the top at every call, so each definition it carries costs
    Redis time on every transition (the whole library costs ~7 µs per call here); only
    the ones the transition refers to are kept, in their original order."""
    if name not in TRANSITIONS:
        raise KeyError(name)
    body = _read(name)
    blocks = _definitions(f"{lua_prelude()}\n{_read('lib')}")
    needed = set(_WORD.findall(body))
    kept = [False] * len(blocks)
    changed = True
    while changed:  # a definition is needed when a later kept text names it
        changed = False
        for i in range(len(blocks) - 1, -1, -1):
            names, text = blocks[i]
            if not kept[i] and names & needed:
                kept[i] = changed = True
                needed.update(_WORD.findall(text))
    prelude = "".join(text for (_, text), keep in zip(blocks, kept, strict=True) if keep)
    return f"{prelude}\n{body}"


class MissingTask(TaskNotFound):
    """A transition script's ``not_found``: the scripts look up tasks only, so it is
    ``task_not_found`` (the message is the script's own)."""

    def __init__(self, message: str) -> None:
        NotFound.__init__(self, message)
        self.task_id = ""


_CODES: dict[str, type[StockqError]] = {
    "illegal_transition": IllegalTransition,
    "stale_lease": StaleLease,
    "not_found": MissingTask,
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


@cache
def script_sha(name: str) -> str:
    return hashlib.sha1(script_source(name).encode("utf-8")).hexdigest()


class Scripts:
    """The transition scripts, called through a :class:`ScriptChannel` (or through
    redis-py when the client is not a plain TCP/unix connection: TLS, fakeredis)."""

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        plain = pool.connection_class in (Connection, UnixDomainSocketConnection)
        self._channel: ScriptChannel | None = None
        if plain and ScriptChannel.supports(kwargs):
            self._channel = ScriptChannel(
                kwargs, timeout=max(5.0, settings.redis_connect_timeout),
                connect_timeout=settings.redis_connect_timeout,
            )
            self._scripts: dict[str, AsyncScript] = {}
        else:
            self._scripts = {
                name: client.register_script(script_source(name)) for name in TRANSITIONS
            }

    async def call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            if self._channel is None:
                return await self._scripts[name](keys=keys, args=args, client=self._client)
            return await self._evalsha(name, keys, args)
        except ResponseError as exc:
            mapped = map_response_error(exc)
            if mapped is not None:
                raise mapped from None
            with redis_errors(self._settings):  # entered on the error path only
                raise
        except Exception:
            with redis_errors(self._settings):
                raise

    async def _evalsha(self, name: str, keys: list[str], args: list[Any]) -> Any:
        assert self._channel is not None
        try:
            return await self._channel.call("EVALSHA", script_sha(name), len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # first use on this server (or after SCRIPT FLUSH / a restart): load, run again
        await self._channel.call("SCRIPT", "LOAD", script_source(name))
        return await self._channel.call("EVALSHA", script_sha(name), len(keys), *keys, *args)

    async def command(self, *args: Any) -> Any:
        """A plain Redis command over the script connection (cheap hot-path reads)."""
        with redis_errors(self._settings):
            if self._channel is None:
                return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
            return await self._channel.call(*args)

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.aclose()
