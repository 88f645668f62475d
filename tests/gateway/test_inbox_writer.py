"""The webhook inbox's group commit: one transaction per batch, each row answered after it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.ledger import Ledger
from gateway.ledger.inbox_writer import InboxWriter
from gateway.models import EventStatus


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def row(event_id: str) -> tuple[str, str, int, int, str, bytes, float]:
    return (event_id, "charge.succeeded", 1, 0, "ch_test_1", b"{}", 1.0)


def inbox_of(ledger: Ledger) -> InboxWriter:
    assert ledger._inbox is not None
    return ledger._inbox


def stored_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT event_id FROM events")}


def insert_in_threads(
    inbox: InboxWriter, ids: list[str], first_id: str = "evt_first"
) -> tuple[object, list[tuple[str, object]]]:
    """Insert ``ids`` from one thread each while the first commit is held up.

    A first thread leads a batch of its own row (``first_id``) and is stopped inside
    the commit until every other row has queued; the lead then passes to them: one
    batch. Returns the first row's outcome and each other row's (id, outcome).
    """
    outcomes: list[tuple[str, object]] = []
    entered, release = threading.Event(), threading.Event()
    commit = inbox._commit

    def held_commit(batch: list[object]) -> None:
        if not entered.is_set():
            entered.set()
            release.wait(5)
        commit(batch)  # type: ignore[arg-type]

    def work(event_id: str, out: list[tuple[str, object]]) -> None:
        try:
            out.append((event_id, inbox.insert(row(event_id))))
        except StorageError as exc:
            out.append((event_id, exc))

    first_out: list[tuple[str, object]] = []
    inbox._commit = held_commit  # type: ignore[method-assign]
    first = threading.Thread(target=work, args=(first_id, first_out))
    first.start()
    assert entered.wait(5)
    threads = [threading.Thread(target=work, args=(i, outcomes)) for i in ids]
    for t in threads:
        t.start()
    wait_until(lambda: len(inbox._queue) == len(ids))
    release.set()
    for t in [first, *threads]:
        t.join(5)
    del inbox._commit
    return first_out[0][1], outcomes


def test_rows_queued_together_commit_in_one_transaction(ledger: Ledger, tmp_path: Path) -> None:
    inbox = inbox_of(ledger)
    before = inbox.batches
    ids = [f"evt_batch_{i}" for i in range(6)]
    outcomes = dict(insert_in_threads(inbox, ids)[1])
    assert inbox.batches == before + 2  # the first row's, then all six together
    assert outcomes == dict.fromkeys(ids, True)
    assert stored_ids(tmp_path / "l.sqlite3") == {"evt_first", *ids}


def test_a_duplicate_in_the_same_batch_is_reported_as_one(ledger: Ledger) -> None:
    inbox = inbox_of(ledger)
    first, twins = insert_in_threads(inbox, ["evt_twice", "evt_twice"], "evt_other")
    results = [first, *(outcome for _, outcome in twins)]  # both twins in the next batch
    assert sorted(results, key=bool) == [False, True, True]
    assert ledger.event_counts()[EventStatus.PENDING] == 2


def test_a_failed_batch_fails_every_row_and_stores_none(ledger: Ledger, tmp_path: Path) -> None:
    db = tmp_path / "l.sqlite3"
    inbox = inbox_of(ledger)
    inbox.insert(row("evt_before"))  # the writer's connection exists
    inbox._conn.dbapi_connection.execute("PRAGMA busy_timeout = 50")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        ids = ["evt_locked_1", "evt_locked_2", "evt_locked_3"]
        outcomes = dict(insert_in_threads(inbox, ids)[1])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert all(isinstance(v, StorageError) for v in outcomes.values()), outcomes
    assert {str(v) for v in outcomes.values()} == {
        "ledger could not record the event: database is locked"
    }
    assert stored_ids(db) == {"evt_before"}
    # The connection is clean again: the next delivery (Stripe's retry) is stored.
    assert inbox.insert(row("evt_locked_1")) is True
    assert stored_ids(db) == {"evt_before", "evt_locked_1"}


def test_an_unexpected_error_fails_the_batch_without_leaking_it(tmp_path: Path) -> None:
    def connect() -> object:
        raise RuntimeError("sk_test_must_not_appear")

    inbox = InboxWriter(connect)
    with pytest.raises(StorageError) as caught:
        inbox.insert(row("evt_x"))
    assert str(caught.value) == "ledger could not record the event: RuntimeError"
    assert inbox._queue == [] and not inbox._leading  # the next call may lead


def test_the_inbox_connection_is_durable(ledger: Ledger) -> None:
    inbox = inbox_of(ledger)
    inbox.insert(row("evt_pragmas"))
    raw = inbox._conn.dbapi_connection
    assert raw.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: a 200 is on disk
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert raw.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_many_threads_store_every_row_in_fewer_transactions(ledger: Ledger) -> None:
    inbox = inbox_of(ledger)
    before_batches, before_rows = inbox.batches, inbox.rows
    barrier = threading.Barrier(16)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(25):
            assert ledger.record_event(f"evt_many_{t}_{i}", "charge.succeeded", 1, False, "", b"{}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert ledger.event_counts()[EventStatus.PENDING] == 400
    assert inbox.rows - before_rows == 400
    assert inbox.batches - before_batches <= 400


def test_a_closed_ledger_refuses_events(tmp_path: Path) -> None:
    led = Ledger.open(f"sqlite:///{tmp_path / 'closed.sqlite3'}")
    led.record_event("evt_open", "charge.succeeded", 1, False, "", b"{}")
    led.close()
    with pytest.raises(StorageError, match="closed"):
        led.record_event("evt_late", "charge.succeeded", 1, False, "", b"{}")
