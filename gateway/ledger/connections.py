"""Per-thread SQLite connections, their PRAGMAs, and safe storage error messages."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
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

    Connections of threads that have ended are closed the next time any thread opens
    one, and all are closed by ``close()``.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[tuple[weakref.ref[threading.Thread], Connection]] = []
        self._closed = False

    def get(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.invalidated:
            return conn
        with self._lock:
            if self._closed:
                raise StorageError("the ledger is closed")
            self._reap()
            conn = self._engine.connect()
            self._all.append((weakref.ref(threading.current_thread()), conn))
        self._local.conn = conn
        self._local.dbapi = conn.connection.dbapi_connection
        return conn

    def dbapi(self) -> sqlite3.Connection:
        """The calling thread's raw sqlite3 connection (the webhook's hot path)."""
        raw: sqlite3.Connection | None = getattr(self._local, "dbapi", None)
        if raw is None or self._local.conn.closed or self._local.conn.invalidated:
            self.get()
            raw = self._local.dbapi
        assert raw is not None
        return raw

    def discard_current(self) -> None:
        """Drop the calling thread's connection after an error left it unusable."""
        conn: Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        self._local.dbapi = None
        if conn is None:
            return
        with self._lock:
            self._all = [(ref, c) for ref, c in self._all if c is not conn]
        close_quietly(conn)  # already broken; nothing more to release

    def _reap(self) -> None:
        alive = []
        for ref, conn in self._all:
            thread = ref()
            if thread is not None and thread.is_alive():
                alive.append((ref, conn))
                continue
            close_quietly(conn)  # the thread is gone; nothing uncommitted is lost
        self._all = alive

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for _ref, conn in conns:
            close_quietly(conn)  # best effort: everything is already committed
