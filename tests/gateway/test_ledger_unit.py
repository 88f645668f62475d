"""Ledger.unit(): several writes in one transaction, committed together or not at all."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from snapshots import charge_snapshot
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from gateway.errors import StorageError
from gateway.fees import FeeSchedule, split
from gateway.ledger import Ledger
from gateway.ledger import statements as st
from gateway.models import ChargeSnapshot, EventStatus, TimelineKind, TransferStatus

ACCOUNT = "acct_test1234567"


def snapshot(charge_id: str = "ch_1", fee: int | None = 320) -> ChargeSnapshot:
    txn = "txn_1" if fee is not None else ""
    return charge_snapshot(charge_id, balance_transaction_id=txn, actual_fee=fee)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return f"{tmp_path}/l.sqlite3"


@pytest.fixture
def ledger(path: str) -> Iterator[Ledger]:
    led = Ledger.open(f"sqlite:///{path}")
    yield led
    led.close()


def committed(path: str, sql: str) -> list[tuple[Any, ...]]:
    """What another connection sees: committed rows only."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        return other.execute(sql).fetchall()


def one_step(ledger: Ledger, charge_id: str = "ch_1") -> None:
    """The processor's step for a charge event: charge, entries, split + transfer, event."""
    with ledger.unit() as u:
        u.upsert_charge(snapshot(charge_id))
        u.add_timeline(charge_id, TimelineKind.EVENT, "charge.succeeded (evt_1)")
        assert u.create_transfer(charge_id, split(10000, "usd", FeeSchedule(), 320), ACCOUNT, "k")
        u.add_timeline(charge_id, TimelineKind.FEE, "split")
        u.mark_event("evt_1", EventStatus.PROCESSED)


def test_the_writes_of_a_unit_commit_together(ledger: Ledger, path: str) -> None:
    ledger.record_event("evt_1", "charge.succeeded", 1, False, "ch_1", b"{}")
    with ledger.unit() as u:
        u.upsert_charge(snapshot())
        u.add_timeline("ch_1", TimelineKind.EVENT, "charge.succeeded (evt_1)")
        u.mark_event("evt_1", EventStatus.PROCESSED)
        # Nothing is visible outside before the block ends...
        assert committed(path, "SELECT count(*) FROM charges") == [(0,)]
        assert committed(path, "SELECT count(*) FROM timeline") == [(0,)]
        assert committed(path, "SELECT status FROM events") == [("pending",)]
    # ...and all of it after.
    assert committed(path, "SELECT charge_id FROM charges") == [("ch_1",)]
    assert committed(path, "SELECT kind FROM timeline") == [("event",)]
    assert committed(path, "SELECT status FROM events") == [("processed",)]


def test_an_exception_rolls_the_whole_unit_back(ledger: Ledger, path: str) -> None:
    ledger.record_event("evt_1", "charge.succeeded", 1, False, "ch_1", b"{}")
    calls: list[int] = []
    ledger.add_listener(lambda: calls.append(1))
    with pytest.raises(RuntimeError, match="crash mid-step"), ledger.unit() as u:
        u.upsert_charge(snapshot())
        assert u.create_transfer("ch_1", split(10000, "usd", FeeSchedule(), 320), ACCOUNT, "k")
        u.add_timeline("ch_1", TimelineKind.FEE, "split")
        raise RuntimeError("crash mid-step")
    assert committed(path, "SELECT count(*) FROM charges") == [(0,)]
    assert committed(path, "SELECT count(*) FROM transfers") == [(0,)]
    assert committed(path, "SELECT count(*) FROM timeline") == [(0,)]
    assert calls == []  # nothing committed: nobody notified
    one_step(ledger)  # the same step again, from the start: the ledger is usable
    v = ledger.get_charge("ch_1")
    assert v is not None and v.transfer_status is TransferStatus.PENDING
    assert calls == [1]


def test_listeners_run_once_after_the_commit(ledger: Ledger, path: str) -> None:
    ledger.record_event("evt_1", "charge.succeeded", 1, False, "ch_1", b"{}")
    seen: list[list[tuple[object, ...]]] = []
    ledger.add_listener(lambda: seen.append(committed(path, "SELECT kind FROM timeline")))
    one_step(ledger)
    assert seen == [[("event",), ("fee",)]]  # once, and the listener saw the commit
    assert committed(path, "SELECT status FROM events") == [("processed",)]


def test_a_unit_that_changes_nothing_notifies_nobody(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot(fee=None))
    calls: list[int] = []
    ledger.add_listener(lambda: calls.append(1))
    with ledger.unit() as u:
        u.mark_event("evt_unknown", EventStatus.PROCESSED)  # matches no row
        u.defer_fee_check("ch_1", 5.0)  # invisible in the window
        assert u.get_charge("ch_1") is not None
    assert calls == []


def test_reads_in_a_unit_see_its_writes_and_others_do_not(ledger: Ledger) -> None:
    seen_outside: list[object] = []
    with ledger.unit() as u:
        u.upsert_charge(snapshot())
        v = u.get_charge("ch_1")
        assert v is not None and v.gross == 10000
        assert u.set_awaiting_fee("ch_1", 100.0) == 100.0
        assert u.set_awaiting_fee("ch_1", 200.0) == 100.0  # the first deadline is kept
        reader = threading.Thread(target=lambda: seen_outside.append(ledger.get_charge("ch_1")))
        reader.start()
        reader.join(10)
    assert seen_outside == [None]
    assert ledger.charges_awaiting_fee(1e12, 10) == ["ch_1"]


def test_a_failed_write_dooms_the_unit_even_if_the_block_catches_it(
    ledger: Ledger, path: str
) -> None:
    with pytest.raises(StorageError) as at_exit, ledger.unit() as u:
        u.upsert_charge(snapshot())
        with pytest.raises(StorageError) as failed:
            u.add_timeline("ch_1", TimelineKind.EVENT, None)  # type: ignore[arg-type]
        with pytest.raises(StorageError, match="earlier write"):
            u.add_timeline("ch_1", TimelineKind.EVENT, "after the failure")
    message = str(failed.value)
    assert message.startswith("ledger could not add a timeline entry: NOT NULL constraint")
    assert "ch_1" not in message and "INSERT" not in message  # no SQL, no values
    assert str(at_exit.value) == message
    assert committed(path, "SELECT count(*) FROM charges") == [(0,)]
    ledger.upsert_charge(snapshot())  # the thread's connection is clean again
    assert committed(path, "SELECT count(*) FROM charges") == [(1,)]


def test_a_ledger_write_inside_a_unit_is_refused(ledger: Ledger, path: str) -> None:
    with ledger.unit() as u:
        u.upsert_charge(snapshot())
        with pytest.raises(RuntimeError, match="unit"):
            ledger.add_timeline("ch_1", TimelineKind.EVENT, "a second transaction")
        u.add_timeline("ch_1", TimelineKind.EVENT, "the unit's own")
    assert committed(path, "SELECT detail FROM timeline") == [("the unit's own",)]
    with pytest.raises(RuntimeError, match="after its with-block"):
        u.add_timeline("ch_1", TimelineKind.EVENT, "too late")


def test_a_locked_database_is_a_storage_error_and_the_unit_recovers(path: str) -> None:
    with Ledger.open(f"sqlite:///{path}", busy_timeout_ms=50) as impatient:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            with pytest.raises(StorageError, match="locked"), impatient.unit() as u:
                u.upsert_charge(snapshot())
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        one_step(impatient)
        assert impatient.get_charge("ch_1") is not None


def test_units_of_two_threads_are_serialised_not_mixed(ledger: Ledger, path: str) -> None:
    ledger.upsert_charge(snapshot("ch_a"))
    ledger.upsert_charge(snapshot("ch_b"))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def steps(charge_id: str) -> None:
        try:
            barrier.wait()
            for i in range(50):
                with ledger.unit() as u:
                    u.add_timeline(charge_id, TimelineKind.EVENT, f"{i}a")
                    u.add_timeline(charge_id, TimelineKind.EVENT, f"{i}b")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=steps, args=(c,)) for c in ("ch_a", "ch_b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    rows = committed(path, "SELECT charge_id, detail FROM timeline ORDER BY id")
    assert len(rows) == 200
    # Each unit's two entries are adjacent: no other unit's write came between them.
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert first[0] == second[0] and first[1][:-1] == second[1][:-1]


def test_the_sqlalchemy_path_commits_and_rolls_back_units_too(path: str) -> None:
    """The PostgreSQL code path (engine.begin(), no raw sqlite3) on a SQLite engine."""
    Ledger.open(f"sqlite:///{path}").close()  # the schema
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool, hide_parameters=True)
    led = Ledger(engine, is_sqlite=False)
    calls: list[int] = []
    led.add_listener(lambda: calls.append(1))
    try:
        with led.unit() as u:
            u.upsert_charge(snapshot())
            u.add_timeline("ch_1", TimelineKind.EVENT, "e")
            assert u.create_transfer("ch_1", split(10000, "usd", FeeSchedule(), 320), ACCOUNT, "k")
            v = u.get_charge("ch_1")
            assert v is not None and v.transfer_status is TransferStatus.PENDING
        assert calls == [1]
        [due] = led.due_transfers(1e12, 10)
        assert (due.charge_id, due.amount, due.metadata["stripe_fee"]) == ("ch_1", 9583, "320")
        with pytest.raises(ValueError, match="boom"), led.unit() as u:
            u.transfer_created("ch_1", "tr_1")
            raise ValueError("boom")
        v = led.get_charge("ch_1")
        assert v is not None and v.transfer_status is TransferStatus.PENDING
        led.transfer_created("ch_1", "tr_1")
        v = led.get_charge("ch_1")
        assert v is not None and (v.transfer_status, v.transfer_id) == (
            TransferStatus.CREATED,
            "tr_1",
        )
        assert [e.kind for e in led.timeline("ch_1")] == [TimelineKind.EVENT]
        assert calls == [1, 1]
    finally:
        led.close()


def test_the_prepared_statements_compile_for_postgresql() -> None:
    from sqlalchemy.dialects import postgresql

    prepared = [v for v in vars(st).values() if isinstance(v, st.Prepared)]
    prepared += [st.POSTGRESQL_UPSERTS.UPSERT_CHARGE, st.POSTGRESQL_UPSERTS.INSERT_TRANSFER]
    assert len(prepared) >= 18
    for stmt in prepared:
        sql = str(stmt.sa.compile(dialect=postgresql.dialect()))  # type: ignore[attr-defined]
        assert "%(p_" in sql or "SELECT" in sql, sql
    upsert = str(prepared[-2].sa.compile(dialect=postgresql.dialect()))  # type: ignore[attr-defined]
    assert "ON CONFLICT (charge_id) DO UPDATE" in upsert


def test_a_closed_ledger_refuses_units_and_prepared_reads(path: str) -> None:
    led = Ledger.open(f"sqlite:///{path}")
    led.close()
    with pytest.raises(StorageError, match="closed"), led.unit():
        pass
    with pytest.raises(StorageError, match="closed"):
        led.mark_event("evt_1", EventStatus.PROCESSED)
    with pytest.raises(StorageError, match="closed"):
        led.get_charge("ch_1")
    with pytest.raises(StorageError, match="closed"):
        led.pending_events(10, 0.0)


def test_a_unit_left_by_an_interrupt_is_rolled_back_and_unusable(ledger: Ledger, path: str) -> None:
    with pytest.raises(KeyboardInterrupt), ledger.unit() as u:
        u.upsert_charge(snapshot())
        raise KeyboardInterrupt
    assert committed(path, "SELECT count(*) FROM charges") == [(0,)]
    with pytest.raises(RuntimeError, match="after its with-block"):
        u.upsert_charge(snapshot())  # would otherwise run outside any transaction
    one_step(ledger)  # the connection is usable
    assert committed(path, "SELECT count(*) FROM charges") == [(1,)]
