"""Group commit for the webhook inbox: many threads' inserts, one transaction, one fsync.

Each webhook thread used to insert its event through its own connection, in its
own transaction. On SQLite that means one fsync per event and, worse, threads
fighting for the database's write lock: a loser sleeps in SQLite's busy handler
(1, 2, 5, 10 ms…) even when the lock frees a microsecond later.

Here every inbox insert goes through one dedicated connection, leader/follower
style: a thread queues its row; if no commit is under way it becomes the leader
and inserts every queued row in one ``BEGIN IMMEDIATE … COMMIT``, otherwise it
waits on its own event. After a commit the leader wakes the rows of its batch
and hands the lead to the first row queued meanwhile, if any. (Followers queued
on one shared lock instead woke one after another, each waiting for the GIL in
turn: a convoy that cost more than the commit it shared.) A thread returns only
once the transaction holding its row has committed (or failed, in which case
every row of that batch fails and each request answers 503), so "nothing is
answered 200 before it is on disk" holds for every event.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from gateway.errors import StorageError
from gateway.ledger.connections import DB_ERRORS, close_quietly, safe_message

INSERT_EVENT = (
    "INSERT INTO events (event_id, type, created, livemode, object_id, raw, received_at,"
    " status, attempts, next_attempt_at, last_error)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, 0, '')"
    " ON CONFLICT (event_id) DO NOTHING"
)

Row = tuple[str, str, int, int, str, bytes, float]


class _Pending:
    __slots__ = ("error", "inserted", "lead", "row", "wake")

    def __init__(self, row: Row) -> None:
        self.row = row
        self.inserted: bool | None = None  # None until its batch committed or failed
        self.error: BaseException | None = None
        self.lead = False  # woken to lead the next batch, not because it is done
        # Held until the row has an outcome (or the lead): a follower blocks acquiring
        # it, the leader releases it. A bare lock, not an Event: Event.set/wait go
        # through a Python-level Condition, which under load cost more than the commit.
        self.wake = threading.Lock()
        self.wake.acquire()


class InboxWriter:
    """Inserts webhook events from any thread; each call returns after its commit."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        # ``connect()`` returns a pool-proxied DB-API connection (engine.raw_connection()).
        self._connect = connect
        self._conn: Any = None
        self._mutex = threading.Lock()  # guards _queue and _leading; held only briefly
        self._queue: list[_Pending] = []
        self._leading = False  # a leader is committing (or has the lead handed to it)
        self._conn_lock = threading.Lock()  # the leader's, or close()'s; never contended
        self._closed = False
        self.batches = 0  # committed transactions, for benchmarks and tests
        self.rows = 0

    def insert(self, row: Row) -> bool:
        """Store one event row; True if new, False if its event id was already stored."""
        pending = _Pending(row)
        with self._mutex:
            self._queue.append(pending)
            lead = not self._leading
            self._leading = True
        if not lead:
            pending.wake.acquire()  # released once: done, or handed the lead
            lead = pending.lead
        if lead:
            self._lead(pending)
        error = pending.error
        if isinstance(error, StorageError):
            raise StorageError(str(error))  # a fresh one per thread: tracebacks stay apart
        if error is not None:
            raise StorageError(safe_message("record the event", error))
        return bool(pending.inserted)

    def _lead(self, own: _Pending) -> None:
        """Commit every queued row (``own`` included), wake them, hand the lead on."""
        with self._mutex:
            batch, self._queue = self._queue, []
        try:
            with self._conn_lock:
                self._commit(batch)  # gives every row an outcome, whatever happens
        finally:
            for pending in batch:
                if pending is not own:  # nobody waits on it (and a handed lead was released)
                    pending.wake.release()
            with self._mutex:
                if self._queue:
                    head = self._queue[0]
                    head.lead = True
                    head.wake.release()  # it takes the lead (and the queue, itself included)
                else:
                    self._leading = False

    def _commit(self, batch: list[_Pending]) -> None:
        results: list[bool] = []
        error: BaseException | None = None
        try:
            cur = self._cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for pending in batch:
                    cur.execute(INSERT_EVENT, pending.row)
                    results.append(cur.rowcount == 1)
                cur.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except Exception as exc:
            error = exc
        finally:
            # Every row of the batch gets an outcome, even on an unexpected exception:
            # a follower must never take "no outcome" for "stored".
            committed = error is None and len(results) == len(batch)
            for i, pending in enumerate(batch):
                if committed:
                    pending.inserted = results[i]
                else:
                    pending.inserted = False
                    pending.error = error or StorageError("the inbox write was interrupted")
        if committed:
            self.batches += 1
            self.rows += len(batch)

    def _cursor(self) -> sqlite3.Cursor:
        if self._closed:
            raise StorageError("the ledger is closed")
        if self._conn is None:
            self._conn = self._connect()
        return self._conn.dbapi_connection.cursor()  # type: ignore[no-any-return]

    def _rollback(self) -> None:
        """Leave no transaction open; drop the connection if it cannot even roll back."""
        conn = self._conn
        if conn is None:
            return
        try:
            raw = conn.dbapi_connection
            if raw.in_transaction:
                raw.rollback()
        except DB_ERRORS:
            self._conn = None
            close_quietly(conn)

    def close(self) -> None:
        with self._conn_lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            close_quietly(conn)
