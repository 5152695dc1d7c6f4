"""structlog configuration, done once per process.

JSON lines on stderr when stderr is not a terminal (or ``STOCKQ_LOG_FORMAT=json``), a
readable console format otherwise.  Every state change logs one fixed event name (the
catalogue is docs/logging.md).  Values of keys that look like secrets are replaced by
``***``, and every rendered line — event fields, exception text, tracebacks — goes
through the settings' :class:`app.redaction.Redactor` (stored secrets, URL passwords).
Records of the standard library's ``logging`` that reach stderr (last-resort handler,
root handlers) are redacted the same way.

Until a process configures logging (every long-running command does; a one-shot CLI
command only with ``-v``), stockq's events go to the standard library's loggers
``stockq.<component>``, under a ``NullHandler``: stockq used as a library
(``app.producer.Producer`` in a web application) prints nothing unless that
application configures logging (structlog, or ``logging`` handlers of its own).

The worker logs two lines per task, so the JSON path is kept cheap: one processor adds
the level and the timestamp, redacts, formats an exception and renders (instead of a
chain of five), the encoder is built once, the redactor's search is a few substring
tests when no secret is in the line, and :func:`get_logger` binds its logger once per
configuration instead of at every call.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import structlog

from app.redaction import Redactor, redactor_for
from app.settings import Settings

_configured = False
_SECRET_KEYS = ("token", "password", "secret", "authorization", "api_key")
logging.getLogger("stockq").addHandler(logging.NullHandler())  # a library prints nothing


_verdicts: dict[str, bool] = {}
_plain: set[str] = set()  # keys known not to be secrets (the common case, checked in C)


def _is_secret(key: str) -> bool:
    verdict = _verdicts.get(key)
    if verdict is None:
        lowered = key.lower()
        verdict = any(s in lowered for s in _SECRET_KEYS) and key != "lease_token"
        if len(_verdicts) < 10_000:
            _verdicts[key] = verdict
            if not verdict:
                _plain.add(key)
    return verdict


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in [k for k in event if _is_secret(k)]:
        event[key] = "***"
    return event


class _UtcClock:
    """``2026-11-30T12:00:00.123456Z`` (what structlog's ``TimeStamper(fmt="iso",
    utc=True)`` writes), formatting the date and time once per second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((t - second) * 1e6):06d}Z"


_LEVELS = {"warn": "warning", "exception": "error"}
_LEVEL_NUMBERS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "error": logging.ERROR}
_format_exc_info = structlog.processors.format_exc_info


def _fallback(obj: Any) -> Any:
    """What structlog's JSONRenderer does with values JSON cannot encode."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


class JsonLines:
    """The JSON line processor: level, timestamp, redaction, exception text, then
    rendering (structlog's add_log_level, TimeStamper, _redact, format_exc_info and
    JSONRenderer(ensure_ascii=False) fused; the fields and values are the same), and
    the rendered line through ``redactor``."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self._redactor = redactor or Redactor()
        self._clock = _UtcClock()
        # what json.dumps(ensure_ascii=False, default=...) builds at every call, built once
        # (without the circular-reference markers: log values are flat)
        self._encode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
            None, _fallback, json.encoder.encode_basestring, None, ": ", ", ", False,
            False, True)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        event["level"] = _LEVELS.get(method, method)
        event["timestamp"] = self._clock.now()
        if not _plain.issuperset(event):
            _redact(logger, method, event)
        if "exc_info" in event:
            event = _format_exc_info(logger, method, event)
        try:
            line = "".join(self._encode(event, 0))
        except (ValueError, RecursionError):  # e.g. a circular value: checked encoding
            line = json.dumps(event, ensure_ascii=False, default=_fallback)
        return self._redactor(line)


class RedactLine:
    """The last processor of the console format: the rendered line through the
    redactor."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(self, _: Any, __: str, line: str) -> str:
        return self._redactor(line)


class RedactRecords(logging.Filter):
    """A filter for the standard library's handlers writing to stderr: the record's
    message and exception text through the redactor (the record is rewritten: every
    handler after this one sees the redacted text)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: logging reports it itself
            return True
        record.msg, record.args = self.redactor(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


def _filter_stdlib(redactor: Redactor) -> None:
    """Install :class:`RedactRecords` on the last-resort handler and the root
    logger's handlers (replacing one installed by an earlier configuration)."""
    handlers = [*logging.getLogger().handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactRecords)]:
            handler.removeFilter(old)
        handler.addFilter(RedactRecords(redactor))


_file_locks: dict[int, threading.Lock] = {}


class LineLogger:
    """structlog's PrintLogger, writing a line with one ``write``: ``print`` writes the
    text and its newline separately, two system calls on the (write-through) stderr."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self._lock = _file_locks.setdefault(id(file), threading.Lock())

    def msg(self, message: str) -> None:
        with self._lock:
            self._file.write(message + "\n")
            self._file.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def write_output(text: str) -> None:
    """Write text that is not a log line of this process (the output of a worker
    child, already redacted) to stderr, under the lock of the log lines; characters
    that were not UTF-8 are written back as the bytes they were (``surrogateescape``)."""
    if not text:
        return
    file = sys.stderr
    with _file_locks.setdefault(id(file), threading.Lock()):
        buffer = getattr(file, "buffer", None)
        if buffer is None:
            file.write(text)
            file.flush()
            return
        file.flush()
        buffer.write(text.encode("utf-8", "surrogateescape"))
        buffer.flush()


class LineLoggerFactory:
    def __init__(self, file: Any) -> None:
        self._file = file

    def __call__(self, *args: Any) -> LineLogger:
        return LineLogger(self._file)


def configure_logging(settings: Settings, *, force: bool = False) -> None:
    """Configure structlog for this process (idempotent unless ``force``)."""
    global _configured
    if _configured and not force:
        return
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    redactor = redactor_for(settings)
    processors: list[Any] = [structlog.contextvars.merge_contextvars]
    if use_json:
        processors.append(JsonLines(redactor))
    else:
        processors += [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
            RedactLine(redactor),
        ]
    _filter_stdlib(redactor)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=LineLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


class _StdlibEvents:
    """What a :class:`_Logger` writes to before logging is configured: the standard
    library's logger ``stockq.<component>`` (silent unless the application configures
    ``logging``), one ``event key=value ...`` message per event."""

    _loggers: dict[str, _StdlibEvents] = {}

    def __init__(self, component: str) -> None:
        self._log = logging.getLogger(component if component.startswith("stockq")
                                      else f"stockq.{component}")

    @classmethod
    def get(cls, component: str) -> _StdlibEvents:
        found = cls._loggers.get(component)
        if found is None:
            found = cls._loggers[component] = cls(component)
        return found

    def is_enabled_for(self, level: int) -> bool:
        return self._log.isEnabledFor(level)

    def _emit(self, level: int, event: str, kw: dict[str, Any], exc_info: bool = False
              ) -> None:
        if self._log.isEnabledFor(level):
            fields = " ".join(f"{k}={'***' if _is_secret(k) else v!r}"
                              for k, v in kw.items())
            self._log.log(level, f"{event} {fields}".strip(), exc_info=exc_info)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit(logging.DEBUG, event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit(logging.INFO, event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit(logging.WARNING, event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit(logging.ERROR, event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        self._emit(logging.ERROR, event, kw, exc_info=True)

    def bind(self, **kw: Any) -> _StdlibEvents:
        return self


class _Logger:
    """A structlog logger tagged ``component=name``, bound at first use and bound again
    whenever structlog was configured since (so the configuration done later at
    start-up, or a test's, applies), instead of at every call like structlog's lazy
    proxy."""

    __slots__ = ("_component", "_bound", "_processors", "_factory")

    def __init__(self, component: str) -> None:
        self._component = component
        self._bound: Any = None
        self._processors: Any = None
        self._factory: Any = None

    def _logger(self) -> Any:
        if not structlog.is_configured():  # nobody configured logging: the stdlib's
            return _StdlibEvents.get(self._component)
        config = structlog.get_config()
        if (self._bound is None or config["processors"] is not self._processors
                or config["logger_factory"] is not self._factory):
            self._processors = config["processors"]
            self._factory = config["logger_factory"]
            self._bound = structlog.get_logger().bind(component=self._component)
        return self._bound

    # the methods the code calls, without a __getattr__ lookup each time
    def debug(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._logger().debug(event, *args, **kw)

    def info(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._logger().info(event, *args, **kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._logger().warning(event, *args, **kw)

    def error(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._logger().error(event, *args, **kw)

    def exception(self, event: str, *args: Any, **kw: Any) -> Any:
        return self._logger().exception(event, *args, **kw)

    def prepare(self, method: str, event: str, **kw: Any) -> Callable[[], None] | None:
        """Render an event now and return what writes it, or None when its level is
        filtered out (or a processor dropped it).  For a caller that has time to spare
        before it knows whether the event happened: the synchronous producer renders
        ``task.enqueued`` while Redis runs the script.  The line's timestamp is the
        rendering time."""
        bound = self._logger()
        if not bound.is_enabled_for(_LEVEL_NUMBERS[method]):
            return None
        if isinstance(bound, _StdlibEvents):
            return lambda: getattr(bound, method)(event, **kw)
        try:
            args, kwargs = bound._process_event(method, event, kw)
        except structlog.DropEvent:
            return None
        write = getattr(bound._logger, method)
        return lambda: write(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger(), name)


def get_logger(name: str) -> Any:
    """A lazy structlog logger tagged ``component=name`` (bound at first use, so the
    configuration done later at start-up applies)."""
    return _Logger(name)


def read_log_records(path: str | Path, event: str | None = None) -> Iterator[dict[str, Any]]:
    """The JSON records of a file of stockq log lines (other lines are skipped), or
    only those of one ``event``: how tests and benchmarks read a process's log."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if event is None or record.get("event") == event:
                yield record
