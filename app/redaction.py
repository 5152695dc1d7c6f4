"""Masking stored secrets in text that leaves the process.

A :class:`Redactor` is built once from the settings (:func:`redactor_for`) and applied
to every log line (``app.logs``), to the output of worker children (``app.worker.
process``) and to every text of a plugin's that stockq writes to its own records: a
failed attempt's error, a progress message, a checkpoint, a result summary
(``app.queue.TaskQueue``), hence the audit rows and the API's answers built from them.

What is masked (each occurrence becomes ``***``):

* the value of every setting that is a secret by name (``tushare_token``,
  ``api_token``, any ``*password*``/``*secret*`` setting) and every password inside a
  URL setting (``redis_url`` — also when built from ``REDIS_PASSWORD`` —,
  ``clickhouse_url``, ``http_proxy`` — also from ``HTTP_PROXY_PASSWORD`` —: the
  ``user:password@`` part and a ``password=`` query argument), as written, percent
  encoded, percent decoded and JSON escaped;
* the password of any URL in the text, whoever's it is:
  ``scheme://user:password@host`` becomes ``scheme://user:***@host``.

Secrets shorter than :data:`MIN_SECRET_LENGTH` characters are not searched for as bare
values: a one-letter password would otherwise mask that letter in every text.  Inside
a URL such a password is still masked by the URL rule.

Occurrences that overlap (two secrets sharing characters, one inside another) are
masked as one span, so no fragment of either is left.  A text without ``://`` and
without any secret is returned as it is, after one substring search per secret: the
worker's two log lines per task pay about a microsecond.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import fields
from functools import lru_cache
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from app.settings import Settings

MASK = "***"
MIN_SECRET_LENGTH = 6

# settings whose whole value is a secret
_SECRET_NAME = re.compile(r"(?i)token|password|passwd|secret|api_key")
# scheme://user:password@ — the password is everything up to the last @ of the
# authority (as urllib reads it); a '/', a quote, '<', '>' or white space ends it.  The
# match starts at "://" (a literal the engine searches for fast; the scheme stays)
_URL_PASSWORD = re.compile(r"(://[^\s:/@\"'<>]*:)([^\s/\"'<>]+)(@)")
_QUERY_PASSWORD = re.compile(r"(?i)(?:^|[?&;])password=([^&#\s]*)")


def url_passwords(url: str) -> list[str]:
    """The passwords a URL holds: its ``user:password@`` part and ``password=``
    query arguments (as written; the redactor adds their other spellings)."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        password = parts.password
        query = parts.query
    except ValueError:  # malformed: take what looks like a password
        match = _URL_PASSWORD.search(url)
        return [match.group(2)] if match else []
    if password:
        found.append(password)
    for match in _QUERY_PASSWORD.finditer("?" + query if query else ""):
        found.append(match.group(1))
    for name, value in parse_qsl(query, keep_blank_values=False):
        if name.lower() == "password":
            found.append(value)
    return [p for p in found if p]


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold (see the module's documentation)."""
    secrets: list[str] = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        if not isinstance(value, str) or not value:
            continue
        if _SECRET_NAME.search(f.name):
            secrets.append(value)
        if "://" in value or "password=" in value.lower():
            secrets.extend(url_passwords(value))
    return secrets


def _spellings(secret: str) -> set[str]:
    """How a secret may appear in a text: as written, percent encoded and decoded,
    and each of those escaped inside a JSON string."""
    forms = {secret, quote(secret, safe=""), unquote(secret)}
    forms |= {json.dumps(s, ensure_ascii=ascii)[1:-1] for s in forms for ascii in (False, True)}
    return {s for s in forms if s}


class Redactor:
    """``redactor(text) -> text`` with known secrets and URL passwords masked."""

    __slots__ = ("needles",)

    def __init__(self, secrets: Iterable[str] = (), *,
                 min_length: int = MIN_SECRET_LENGTH) -> None:
        needles: set[str] = set()
        for secret in secrets:
            if len(secret) >= min_length:
                needles |= {s for s in _spellings(secret) if len(s) >= min_length}
        # longest first: the search stops at the first hit
        self.needles: tuple[str, ...] = tuple(sorted(needles, key=lambda s: (-len(s), s)))

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        return cls(settings_secrets(settings))

    def __call__(self, text: str) -> str:
        for needle in self.needles:
            if needle in text:
                text = _mask(text, self.needles)
                break
        if "://" in text:
            text = _URL_PASSWORD.sub(_keep_user, text)
        return text

    def __repr__(self) -> str:  # never the secrets themselves
        return f"Redactor({len(self.needles)} spellings)"


def _keep_user(match: re.Match[str]) -> str:
    return f"{match.group(1)}{MASK}{match.group(3)}"


def _mask(text: str, needles: tuple[str, ...]) -> str:
    """``text`` with every occurrence of every needle masked; overlapping or adjacent
    occurrences become one ``***``."""
    spans: list[tuple[int, int]] = []
    for needle in needles:
        start = text.find(needle)
        while start >= 0:
            spans.append((start, start + len(needle)))
            start = text.find(needle, start + 1)
    spans.sort()
    out: list[str] = []
    pos = 0
    end = -1
    for start, stop in spans:
        if start > end:  # a new span: flush the text before it
            if end >= 0:
                out.append(MASK)
            out.append(text[pos:start])
            end = stop
        else:
            end = max(end, stop)
        pos = end
    if end >= 0:
        out.append(MASK)
    out.append(text[pos:])
    return "".join(out)


@lru_cache(maxsize=16)
def _cached(settings: Settings) -> Redactor:
    return Redactor.from_settings(settings)


def redactor_for(settings: Settings) -> Redactor:
    """The redactor of a settings instance (built once per distinct settings)."""
    try:
        return _cached(settings)
    except TypeError:  # a field holds something unhashable (a test's list)
        return Redactor.from_settings(settings)


class StreamRedactor:
    """Redacts a stream of text cut at arbitrary places (a child's output): whole lines
    are redacted and passed on as they complete; a line longer than ``max_line`` is
    passed on in pieces, each ending at white space where possible and holding back
    enough characters that a secret cut in two is masked once it completes.  (A secret
    containing a line break is not masked in a stream.)"""

    __slots__ = ("_redact", "_pending", "_max_line", "_hold")

    def __init__(self, redactor: Redactor, *, max_line: int = 64 * 1024) -> None:
        self._redact = redactor
        self._pending = ""
        self._max_line = max_line
        longest = len(redactor.needles[0]) if redactor.needles else 0
        self._hold = max(longest, 256)

    def feed(self, text: str) -> str:
        """What can be passed on after ``text`` arrived (possibly '')."""
        pending = self._pending + text
        cut = pending.rfind("\n") + 1
        if cut:
            done, pending = self._redact(pending[:cut]), pending[cut:]
        else:
            done = ""
        if len(pending) > self._max_line:
            pending = self._redact(pending)  # masked parts are stable when redone
            limit = len(pending) - self._hold
            space = max(pending.rfind(" ", 0, limit), pending.rfind("\t", 0, limit))
            cut = space + 1 if space > 0 else limit
            done, pending = done + pending[:cut], pending[cut:]
        self._pending = pending
        return done

    def close(self) -> str:
        """The rest, at the end of the stream."""
        rest, self._pending = self._pending, ""
        return self._redact(rest) if rest else ""
