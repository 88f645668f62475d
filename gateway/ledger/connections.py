"""Per-thread SQLite connections, their PRAGMAs, and safe storage error messages."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from gateway.errors import StorageError

DB_ERRORS = (SQLAlchemyError, sqlite3.Error, OSError)


def safe_message(what: str, exc: BaseException) -> str:
    """A StorageError message: what failed and why, never SQL parameters or payloads."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.Error):
        # SQLite's own texts ("database is locked", "disk I/O error", "UNIQUE constraint
        # failed: t.c") name no values.
        detail = str(orig)
    elif isinstance(orig, OSError):
        detail = orig.strerror or type(orig).__name__
    else:
        # Other drivers' messages may quote row values: name the class only.
        detail = type(orig).__name__
    return f"ledger could not {what}: {detail}"


def close_quietly(conn: Any) -> None:
    """Close a connection, ignoring database errors (shutdown and clean-up paths)."""
    with contextlib.suppress(*DB_ERRORS):
        conn.close()


def install_sqlite_pragmas(engine: Engine, busy_timeout_ms: int) -> None:
    """Apply the durability PRAGMAs to every new SQLite connection (DESIGN §4)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The ledger emits BEGIN itself (BEGIN IMMEDIATE for writes); sqlite3's legacy
        # implicit BEGIN would run SELECTs outside the write transaction.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # A 200 already told Stripe to stop retrying: every commit reaches the disk.
            cur.execute("PRAGMA synchronous = FULL")
        finally:
            cur.close()


class ThreadConnections:
    """One long-lived SQLAlchemy Connection per thread (SQLite allows one writer anyway).

    Keyed by ``threading.get_ident()``, not a ``threading.local``: PySide6 gives each
    ``QRunnable.run`` on a Qt pool thread a fresh Python thread state, so a local
    would be empty every time and every background read would open (and leak) a new
    connection. The thread id is stable for the life of the OS thread. Connections
    of threads that have ended are closed the next time any thread opens one, and
    all are closed by ``close()``.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        # ident -> (SQLAlchemy connection, its raw sqlite3 connection or None)
        self._by_ident: dict[int, tuple[Connection, Any]] = {}
        self._closed = False

    def _current(self) -> tuple[Connection, Any] | None:
        entry = self._by_ident.get(threading.get_ident())
        if entry is None or entry[0].closed or entry[0].invalidated:
            return None
        return entry

    def get(self) -> Connection:
        entry = self._current()
        if entry is not None:
            return entry[0]
        # Registers a thread Python did not start (a Qt pool thread) in
        # threading.enumerate(), so _reap() never takes it for an ended one.
        threading.current_thread()
        with self._lock:
            if self._closed:
                raise StorageError("the ledger is closed")
            self._reap()
            conn = self._engine.connect()
            self._by_ident[threading.get_ident()] = (conn, conn.connection.dbapi_connection)
        return conn

    def dbapi(self) -> sqlite3.Connection:
        """The calling thread's raw sqlite3 connection (the webhook's hot path)."""
        entry = self._current()
        if entry is None:
            self.get()
            entry = self._current()
        assert entry is not None and entry[1] is not None
        return entry[1]  # type: ignore[no-any-return]

    def discard_current(self) -> None:
        """Drop the calling thread's connection after an error left it unusable."""
        with self._lock:
            entry = self._by_ident.pop(threading.get_ident(), None)
        if entry is not None:
            close_quietly(entry[0])  # already broken; nothing more to release

    def _reap(self) -> None:
        # Every thread that got a connection is registered (see get()): one missing
        # from threading.enumerate() has ended.
        alive = {t.ident for t in threading.enumerate()}
        for ident in [i for i in self._by_ident if i not in alive]:
            conn, _raw = self._by_ident.pop(ident)
            close_quietly(conn)  # the thread is gone; nothing uncommitted is lost

    @property
    def open_count(self) -> int:
        return len(self._by_ident)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries, self._by_ident = list(self._by_ident.values()), {}
        for conn, _raw in entries:
            close_quietly(conn)  # best effort: everything is already committed
