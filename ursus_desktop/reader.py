"""Ledger reads for the views, off the GUI thread.

A COUNT or the totals of a million-charge ledger take from tens of milliseconds
to a second, and even a page of rows or one charge's timeline waits for the GIL
while the gateway is busy: the views never read on the GUI thread. They submit
a read on a named *lane*; it runs on a small thread pool and its result comes
back through a queued signal to this object's bound slot, which calls the
view's callback on the GUI thread. A lane runs one read at a time and keeps only
the newest request waiting behind it, so a burst of ledger changes costs at
most two reads per lane, however long the burst.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from gateway.errors import StorageError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Request:
    ticket: int
    read: Callable[[], Any]
    on_result: Callable[[Any], None]
    on_error: Callable[[str], None] | None


class _ReadJob(QRunnable):
    def __init__(self, reader: LedgerReader, lane: str, request: _Request) -> None:
        super().__init__()
        self._reader = reader
        self._lane = lane
        self._request = request

    def run(self) -> None:
        # Worker thread: only read and emit.
        result: Any = None
        error: str | None = None
        try:
            result = self._request.read()
        except StorageError as exc:
            error = str(exc)
        except Exception:  # a bug: traceback in the log, the view keeps what it shows
            log.exception("background ledger read failed")
            error = "internal error"
        self._reader.read_done.emit(self._lane, self._request.ticket, result, error)


class LedgerReader(QObject):
    """Runs ledger reads on a pool; results arrive on the GUI thread, per lane, newest wins."""

    read_done = Signal(str, int, object, object)  # lane, ticket, result, error

    def __init__(self, parent: QObject | None = None, threads: int = 3) -> None:
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads)
        self._tickets = itertools.count(1)
        self._running: dict[str, _Request] = {}
        self._waiting: dict[str, _Request] = {}
        self.read_done.connect(self.on_read_done)

    def submit(
        self,
        lane: str,
        read: Callable[[], Any],
        on_result: Callable[[Any], None],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Run ``read`` off the GUI thread; ``on_result(value)`` is called on the GUI thread."""
        request = _Request(next(self._tickets), read, on_result, on_error)
        if lane in self._running:
            self._waiting[lane] = request  # replaces an older waiting request
            return
        self._start(lane, request)

    def _start(self, lane: str, request: _Request) -> None:
        self._running[lane] = request
        self._pool.start(_ReadJob(self, lane, request))

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def wait_idle(self, msecs: int = 5000) -> bool:
        """Block until the pool has no job running (shutdown and tests)."""
        return self._pool.waitForDone(msecs)

    @Slot(str, int, object, object)
    def on_read_done(self, lane: str, ticket: int, result: object, error: object) -> None:
        request = self._running.pop(lane, None)
        waiting = self._waiting.pop(lane, None)
        if waiting is not None:
            self._start(lane, waiting)
        if request is None or request.ticket != ticket:  # pragma: no cover - defensive
            return
        if error is None:
            request.on_result(result)
        elif request.on_error is not None:
            request.on_error(str(error))
        else:
            log.warning("ledger read on lane %s failed: %s", lane, error)
