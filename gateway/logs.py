"""Log files: ``access.log`` (one line per request) and ``error.log`` (INFO+), redacted.

``error.log`` is the gateway's journal in the nginx/Apache sense: warnings and
errors, and at INFO one line per event, fee split and transfer (the audit trail
the desktop's Logs tab filters by level).

Both rotate at UTC midnight and keep 14 days. ``access.log`` is written in
blocks: a line reaches the file within a second (nginx's ``flush=1s``), not with
a ``write()`` per request, which under load cost each webhook a GIL handover;
``error.log`` is written line by line. Every handler carries a
RedactingFilter, so a secret that slips into a message, an argument or a
traceback is written as ``[REDACTED]``. Lines are greppable and fail2ban can
parse the invalid-key line::

    2026-11-26T12:00:00Z ERROR gateway.app Invalid API key attempt from 1.2.3.4
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import Any

ACCESS_LOGGER = "gateway.access"
ERROR_LOGGERS = ("gateway", "waitress")
ACCESS_LOG = "access.log"
ERROR_LOG = "error.log"
BACKUP_DAYS = 14
# Both files: a new one at UTC midnight, 14 kept.
ROTATION: dict[str, Any] = {
    "when": "midnight",
    "backupCount": BACKUP_DAYS,
    "utc": True,
    "encoding": "utf-8",
}
REDACTED = "[REDACTED]"

# Stripe secret/restricted keys and webhook signing secrets, whatever the config holds.
SECRET_PATTERN = r"(?:sk|rk)_(?:test|live)_[A-Za-z0-9*]+|whsec_[A-Za-z0-9]+"  # noqa: S105
_SECRET_RE = re.compile(SECRET_PATTERN)

DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
ERROR_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
ACCESS_FORMAT = "%(asctime)s %(message)s"


def secrets_regex(secrets: Iterable[str] = ()) -> re.Pattern[str]:
    """One pattern matching the given secret values and anything shaped like a Stripe secret."""
    values = sorted({s for s in secrets if s}, key=len, reverse=True)
    parts = [re.escape(v) for v in values] + [SECRET_PATTERN]
    return re.compile("|".join(parts))


def redact(text: str, pattern: re.Pattern[str] = _SECRET_RE) -> str:
    """``text`` with every match of ``pattern`` replaced by ``[REDACTED]``."""
    return pattern.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record so its message and traceback hold no secret."""

    def __init__(self, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self._pattern = secrets_regex(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not leak its arguments either
            message = str(record.msg)
        record.msg = redact(message, self._pattern)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._pattern)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._pattern)
        return True


class UtcFormatter(logging.Formatter):
    """``2026-11-26T12:00:00Z``: UTC, no milliseconds, sortable."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt, datefmt=DATE_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # One strftime per second, not per line: the access log writes one per request.
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(DATE_FORMAT, time.gmtime(second))
            self._second = second
        return self._stamp


@dataclass(slots=True)
class LogFiles:
    """What setup_logging installed; ``teardown()`` removes and closes it all."""

    access_log: Path
    error_log: Path
    handlers: list[tuple[logging.Logger, logging.Handler]] = field(default_factory=list)
    saved: list[tuple[logging.Logger, int, bool]] = field(default_factory=list)

    def flush(self) -> None:
        """Write out what the handlers hold now (the access log flushes once a second)."""
        for _logger, handler in self.handlers:
            if isinstance(handler, BufferedRotatingFileHandler):
                handler.flush_now()
            else:
                handler.flush()

    def teardown(self) -> None:
        for logger, handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()
        for logger, level, propagate in self.saved:
            logger.setLevel(level)
            logger.propagate = propagate
        self.handlers.clear()
        self.saved.clear()


class BufferedRotatingFileHandler(TimedRotatingFileHandler):
    """A daily-rotated file written in blocks, each line at most ``interval`` seconds late.

    ``handle()`` (on the request's thread) only redacts the record and appends it
    to a deque: no handler lock, no ``write()``, so request threads never queue on
    each other. A one-shot timer (or ``flush_now``/``close``) formats and writes
    the block and flushes the file once.
    """

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        super().__init__(path, **ROTATION)
        self._interval = interval
        self._pending: deque[logging.LogRecord] = deque()
        self._arm_lock = threading.Lock()  # taken once per block, not per line
        self._timer: threading.Timer | None = None
        self._closing = False

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        passed = bool(self.filter(record))  # the RedactingFilter: before it is kept
        if passed:
            self._pending.append(record)  # atomic
            if self._timer is None:
                self._arm()
        return passed

    def _arm(self) -> None:
        with self._arm_lock:
            if self._timer is None and not self._closing:
                timer = threading.Timer(self._interval, self.flush_now)
                timer.daemon = True
                timer.name = "access-log-flush"
                self._timer = timer
                timer.start()

    def flush(self) -> None:
        # StreamHandler.emit calls this after every line: the block is flushed once,
        # by flush_now. Only close() (FileHandler.close calls flush) flushes here.
        if self._closing:
            super().flush()

    def flush_now(self) -> None:
        """Write every pending line and flush the file."""
        with self._arm_lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            while self._pending:
                super().emit(self._pending.popleft())  # rollover check, format, write
            if self.stream is not None:
                self.stream.flush()

    def close(self) -> None:
        with self._arm_lock:
            self._closing = True
        self.flush_now()
        super().close()


def _file_handler(
    path: Path, level: int, fmt: str, secrets: Sequence[str], buffered: bool = False
) -> logging.Handler:
    handler: logging.Handler
    if buffered:
        handler = BufferedRotatingFileHandler(path)
    else:
        handler = TimedRotatingFileHandler(path, **ROTATION)
    handler.setLevel(level)
    handler.setFormatter(UtcFormatter(fmt))
    handler.addFilter(RedactingFilter(secrets))
    return handler


def setup_logging(
    log_dir: Path,
    secrets: Sequence[str] = (),
    level: int = logging.INFO,
    console: bool = False,
) -> LogFiles:
    """Install the access and error log files under ``log_dir`` (created if missing)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    files = LogFiles(access_log=log_dir / ACCESS_LOG, error_log=log_dir / ERROR_LOG)

    def attach(logger: logging.Logger, handler: logging.Handler) -> None:
        logger.addHandler(handler)
        files.handlers.append((logger, handler))

    access = logging.getLogger(ACCESS_LOGGER)
    files.saved.append((access, access.level, access.propagate))
    access.setLevel(logging.INFO)
    # Request lines stay out of error.log and the console (they have their own file).
    access.propagate = False
    attach(
        access,
        _file_handler(files.access_log, logging.INFO, ACCESS_FORMAT, secrets, buffered=True),
    )

    error_handler = _file_handler(files.error_log, level, ERROR_FORMAT, secrets)
    console_handler: logging.Handler | None = None
    if console:
        console_handler = logging.StreamHandler(sys.stderr)
        console_handler.setLevel(level)
        console_handler.setFormatter(UtcFormatter(ERROR_FORMAT))
        console_handler.addFilter(RedactingFilter(secrets))
    for name in ERROR_LOGGERS:
        logger = logging.getLogger(name)
        files.saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(level)
        attach(logger, error_handler)
        if console_handler is not None:
            attach(logger, console_handler)
    # "Task queue depth is N" is normal when more requests arrive than there are
    # threads, and logging it per queued request costs the event-loop thread.
    queue_logger = logging.getLogger("waitress.queue")
    files.saved.append((queue_logger, queue_logger.level, queue_logger.propagate))
    queue_logger.setLevel(logging.ERROR)
    return files
