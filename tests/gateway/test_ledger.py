"""Ledger: durability settings, idempotency in the schema, concurrency, listeners, migrations."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from snapshots import charge_snapshot
from sqlalchemy import create_engine, text

from gateway.errors import StorageError
from gateway.fees import FeeSchedule, FeeSource, FeeSplit, split
from gateway.ledger import SCHEMA_VERSION, Ledger, schema
from gateway.ledger import core as ledger_core
from gateway.models import (
    ChargeFilter,
    ChargeSnapshot,
    EventStatus,
    TimelineKind,
    TransferStatus,
)

ACCOUNT = "acct_test1234567"
RAW = b'{"id": "evt_1", "object": "event", "data": {"object": {"id": "ch_1"}}}\xff\x00'


def snapshot(charge_id: str = "ch_1", **changes: object) -> ChargeSnapshot:
    return charge_snapshot(charge_id, **changes)


def usd_split(gross: int = 10000) -> FeeSplit:
    return split(gross, "usd", FeeSchedule())


def key(charge_id: str) -> str:
    return f"ursus-transfer-{charge_id}"


def record(ledger: Ledger, event_id: str, raw: bytes = RAW, type: str = "charge.succeeded") -> bool:
    return ledger.record_event(event_id, type, 1_780_000_000, False, "ch_1", raw)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/l.sqlite3"


@pytest.fixture
def second(url: str, ledger: Ledger) -> Iterator[Ledger]:
    """Another Ledger on the conftest ledger's file: what a second process would see."""
    assert ledger  # the fixture's file exists first
    other = Ledger.open(url)
    yield other
    other.close()


# --- opening, durability settings ---------------------------------------------------------


def test_open_creates_parent_directories_and_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "ursus.sqlite3"
    with Ledger.open(f"sqlite:///{path}") as led:
        assert led.count_charges(ChargeFilter()) == 0
    assert path.exists()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)


def test_sqlite_runs_in_wal_mode_with_full_sync_and_a_busy_timeout(ledger: Ledger) -> None:
    assert ledger._conns is not None
    raw = ledger._conns.dbapi()  # the connection this thread writes through
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert raw.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert raw.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_each_thread_gets_its_own_connection_and_dead_threads_give_theirs_back(
    ledger: Ledger,
) -> None:
    assert ledger._conns is not None
    conns = ledger._conns
    seen: list[int] = []

    def work(i: int) -> None:
        seen.append(id(conns.dbapi()))
        record(ledger, f"evt_thread_{i}")

    for i in range(12):
        t = threading.Thread(target=work, args=(i,))
        t.start()
        t.join()
    record(ledger, "evt_main")  # opening no new one; reaps the dead threads' connections
    assert id(conns.dbapi()) not in seen
    assert conns.open_count <= 2
    assert ledger.event_counts()[EventStatus.PENDING] == 13


@pytest.mark.parametrize("bad", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="in-memory"):
        Ledger.open(bad)


def test_an_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        Ledger.open("mysql://u@localhost/db")


# --- the inbox ------------------------------------------------------------------------------


def test_the_same_event_twice_is_stored_once(ledger: Ledger) -> None:
    assert record(ledger, "evt_1") is True
    assert record(ledger, "evt_1", raw=b"a different body") is False
    events = ledger.pending_events(10, time.time())
    assert [e.event_id for e in events] == ["evt_1"]
    assert events[0].raw == RAW  # the first body, byte for byte
    assert ledger.event_counts()[EventStatus.PENDING] == 1


def test_record_event_is_committed_before_it_returns(ledger: Ledger, url: str) -> None:
    record(ledger, "evt_1")
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT event_id, raw FROM events").fetchall() == [("evt_1", RAW)]


def test_pending_events_come_in_arrival_order_and_respect_deferral(ledger: Ledger) -> None:
    for i in range(5):
        record(ledger, f"evt_{i}")
    now = time.time()
    assert [e.event_id for e in ledger.pending_events(3, now)] == ["evt_0", "evt_1", "evt_2"]
    ledger.defer_event("evt_0", "stripe unreachable", now + 60)
    ledger.mark_event("evt_1", EventStatus.PROCESSED)
    ledger.mark_event("evt_2", EventStatus.FAILED, "bad payload")
    ledger.mark_event("evt_3", EventStatus.IGNORED)
    assert [e.event_id for e in ledger.pending_events(10, now)] == ["evt_4"]
    later = ledger.pending_events(10, now + 61)
    assert [e.event_id for e in later] == ["evt_0", "evt_4"]
    assert later[0].attempts == 1
    assert later[0].last_error == "stripe unreachable"
    assert later[0].status is EventStatus.PENDING
    assert later[0].seq < later[1].seq
    assert ledger.event_counts() == {
        EventStatus.PENDING: 2,
        EventStatus.PROCESSED: 1,
        EventStatus.IGNORED: 1,
        EventStatus.FAILED: 1,
    }


def test_eight_threads_recording_800_events_lose_none(ledger: Ledger) -> None:
    calls: list[int] = []
    ledger.add_listener(lambda: calls.append(1))
    barrier = threading.Barrier(8)
    results: list[bool] = []
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(100):
                results.append(record(ledger, f"evt_{n}_{i}"))
                if i % 25 == 0:
                    ledger.count_charges(ChargeFilter())  # readers interleave too
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results.count(True) == 800
    assert ledger.event_counts()[EventStatus.PENDING] == 800
    assert len(ledger.pending_events(1000, time.time())) == 800
    assert len(calls) == 800


# --- listeners and the data version ---------------------------------------------------------


def test_listeners_run_after_the_commit_without_payload(ledger: Ledger, url: str) -> None:
    path = url.removeprefix("sqlite:///")
    seen: list[list[tuple[str]]] = []

    def listener() -> None:
        with sqlite3.connect(path) as other:  # another connection: sees only committed rows
            seen.append(other.execute("SELECT event_id FROM events").fetchall())

    ledger.add_listener(listener)
    record(ledger, "evt_1")
    assert seen == [[("evt_1",)]]


def test_a_duplicate_event_notifies_nobody(ledger: Ledger) -> None:
    record(ledger, "evt_1")
    calls: list[int] = []
    ledger.add_listener(lambda: calls.append(1))
    record(ledger, "evt_1")
    assert calls == []


def test_a_failing_listener_is_logged_and_the_others_still_run(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("listener bug")

    ledger.add_listener(broken)
    ledger.add_listener(lambda: calls.append("second"))
    with caplog.at_level(logging.ERROR, logger="gateway.ledger.core"):
        assert record(ledger, "evt_1") is True  # the write itself succeeded
    assert calls == ["second"]
    assert "listener" in caplog.text
    assert "listener bug" in caplog.text


def test_remove_listener(ledger: Ledger) -> None:
    calls: list[int] = []

    def listener() -> None:
        calls.append(1)

    ledger.add_listener(listener)
    record(ledger, "evt_1")
    ledger.remove_listener(listener)
    ledger.remove_listener(listener)  # removing twice is harmless
    record(ledger, "evt_2")
    assert calls == [1]


def test_every_kind_of_write_notifies(ledger: Ledger) -> None:
    calls: list[int] = []
    ledger.add_listener(lambda: calls.append(1))
    ledger.upsert_charge(snapshot())
    ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1"))
    ledger.transfer_created("ch_1", "tr_1")
    ledger.record_refund("ch_1", "re_1", 100, 1)
    ledger.add_timeline("ch_1", TimelineKind.REFUND, "refund re_1")
    assert len(calls) == 5


def test_data_version_changes_when_another_instance_commits(
    ledger: Ledger, second: Ledger, url: str
) -> None:
    before = second.data_version()
    assert second.data_version() == before  # stable while nothing happens
    record(ledger, "evt_1")
    after_event = second.data_version()
    assert after_event != before
    ledger.mark_event("evt_1", EventStatus.PROCESSED)  # an update, not just an insert
    assert second.data_version() != after_event
    # A foreign process's commit (plain sqlite3) shows up too.
    mine = ledger.data_version()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as other:
        other.execute("UPDATE events SET last_error = 'x'")
    assert ledger.data_version() != mine


def test_data_version_changes_on_own_writes(ledger: Ledger) -> None:
    before = ledger.data_version()
    ledger.upsert_charge(snapshot())
    assert ledger.data_version() != before


# --- storage errors -------------------------------------------------------------------------


def test_a_read_only_database_raises_storage_error_without_the_payload(
    ledger: Ledger, url: str
) -> None:
    path = url.removeprefix("sqlite:///")
    with Ledger.open(f"sqlite:///file:{path}?mode=ro&uri=true") as read_only:
        assert read_only.count_charges(ChargeFilter()) == 0  # reading works
        with pytest.raises(StorageError) as info:
            read_only.record_event("evt_x", "charge.succeeded", 1, False, "ch_1", b"SECRET-BODY")
    message = str(info.value)
    assert "readonly" in message
    assert "SECRET-BODY" not in message
    assert "INSERT" not in message
    assert "evt_x" not in message


def test_a_locked_database_raises_storage_error_then_recovers(url: str, ledger: Ledger) -> None:
    with Ledger.open(url, busy_timeout_ms=50) as impatient:
        blocker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            with pytest.raises(StorageError, match="locked"):
                record(impatient, "evt_1")
            with pytest.raises(StorageError, match="locked"):
                impatient.upsert_charge(snapshot())
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert record(impatient, "evt_1") is True  # same thread, same connection: usable
        impatient.upsert_charge(snapshot())
        assert impatient.get_charge("ch_1") is not None


def test_a_closed_ledger_raises_storage_error(url: str) -> None:
    led = Ledger.open(url)
    led.close()
    led.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        record(led, "evt_1")
    with pytest.raises(StorageError, match="closed"):
        led.count_charges(ChargeFilter())
    with pytest.raises(StorageError, match="closed"):
        led.data_version()


def test_storage_error_from_an_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError):
        Ledger.open(f"sqlite:///{blocker}/sub/l.sqlite3")


# --- charges ---------------------------------------------------------------------------------


def test_upsert_keeps_the_first_seq_and_updates_stripe_fields(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot("ch_1", captured=False))
    ledger.upsert_charge(snapshot("ch_2"))
    first = ledger.get_charge("ch_1")
    assert first is not None
    assert first.captured is False
    ledger.upsert_charge(snapshot("ch_1", captured=True))
    again = ledger.get_charge("ch_1")
    assert again is not None
    assert again.captured is True
    assert again.seq == first.seq
    assert ledger.get_charge("ch_missing") is None


def test_a_known_fee_and_refunds_are_never_forgotten_by_a_stale_snapshot(ledger: Ledger) -> None:
    ledger.upsert_charge(
        snapshot(amount_refunded=500, balance_transaction_id="txn_1", actual_fee=320)
    )
    ledger.upsert_charge(snapshot(amount_refunded=0, balance_transaction_id="", actual_fee=None))
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert view.amount_refunded == 500
    with sqlite3.connect(ledger._engine.url.database or "") as db:
        row = db.execute(
            "SELECT actual_fee, balance_transaction_id FROM charges WHERE charge_id = 'ch_1'"
        ).fetchone()
    assert row == (320, "txn_1")


def test_a_charge_without_transfer_shows_status_none_and_no_split(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot())
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert view.transfer_status is TransferStatus.NONE
    assert (view.stripe_fee, view.fee_source, view.commission, view.transfer_amount) == (
        None,
        None,
        None,
        None,
    )
    assert view.net is None


def test_awaiting_fee_keeps_the_first_deadline_and_backs_off(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot())
    ledger.upsert_charge(snapshot("ch_2"))
    assert ledger.set_awaiting_fee("ch_1", 1000.0) == 1000.0
    assert ledger.set_awaiting_fee("ch_1", 2000.0) == 1000.0  # the earlier deadline stays
    assert ledger.set_awaiting_fee("ch_missing", 1000.0) is None
    assert ledger.charges_awaiting_fee(now=0.0, limit=10) == ["ch_1"]  # due at once
    ledger.defer_fee_check("ch_1", 500.0)
    assert ledger.charges_awaiting_fee(now=499.0, limit=10) == []
    assert ledger.charges_awaiting_fee(now=500.0, limit=10) == ["ch_1"]
    ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1"))
    assert ledger.charges_awaiting_fee(now=10_000.0, limit=10) == []  # no longer waiting


# --- transfers -------------------------------------------------------------------------------


def test_one_transfer_per_charge(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot())
    assert ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1")) is True
    other = dataclasses.replace(usd_split(), stripe_fee=0, commission=0, transfer=10000)
    assert ledger.create_transfer("ch_1", other, "acct_test9999999", "another-key") is False
    due = ledger.due_transfers(time.time(), 10)
    assert len(due) == 1
    assert (due[0].amount, due[0].destination, due[0].idempotency_key) == (
        9583,
        ACCOUNT,
        "ursus-transfer-ch_1",
    )
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert (view.stripe_fee, view.commission, view.transfer_amount) == (320, 97, 9583)


def test_the_schema_itself_refuses_a_second_transfer_row(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot())
    ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1"))
    path = ledger._engine.url.database or ""
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.execute(
            "INSERT INTO transfers (charge_id, amount, currency, destination, idempotency_key,"
            " status, created_at, updated_at) VALUES ('ch_1', 1, 'usd', 'a', 'k', 'pending', 0, 0)"
        )


@pytest.mark.parametrize("two_instances", [False, True])
def test_two_threads_racing_to_create_a_transfer_exactly_one_wins(
    ledger: Ledger, second: Ledger, two_instances: bool
) -> None:
    for n in range(8):
        charge_id = f"ch_race{n}"
        ledger.upsert_charge(snapshot(charge_id))
        barrier = threading.Barrier(2)
        results: list[bool] = []

        def attempt(
            led: Ledger,
            idem: str,
            cid: str = charge_id,
            barrier: threading.Barrier = barrier,
            results: list[bool] = results,
        ) -> None:
            barrier.wait()
            results.append(led.create_transfer(cid, usd_split(), ACCOUNT, idem))

        other = second if two_instances else ledger
        threads = [
            threading.Thread(target=attempt, args=(ledger, "key-a")),
            threading.Thread(target=attempt, args=(other, "key-b")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False, True]
    assert len(ledger.due_transfers(time.time(), 100)) == 8


def test_create_transfer_refuses_an_unknown_charge_or_a_mismatched_split(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="no charge"):
        ledger.create_transfer("ch_missing", usd_split(), ACCOUNT, key("ch_missing"))
    ledger.upsert_charge(snapshot())
    with pytest.raises(ValueError, match="does not match"):
        ledger.create_transfer("ch_1", usd_split(5000), ACCOUNT, key("ch_1"))
    with pytest.raises(ValueError, match="does not match"):
        ledger.create_transfer("ch_1", split(10000, "eur", FeeSchedule()), ACCOUNT, key("ch_1"))
    assert ledger.due_transfers(time.time(), 10) == []
    assert ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1")) is True


def test_due_transfers_carry_string_metadata_frozen_at_creation(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot(actual_fee=300))
    fee_split = split(10000, "usd", FeeSchedule(), actual_fee=300)
    ledger.create_transfer("ch_1", fee_split, ACCOUNT, key("ch_1"))
    ledger.upsert_charge(snapshot(order_id="changed-later"))
    (due,) = ledger.due_transfers(time.time(), 10)
    assert due.metadata == {
        "charge_id": "ch_1",
        "order_id": "order-1",
        "gross": "10000",
        "stripe_fee": "300",
        "fee_source": "actual",
        "commission": "97",
    }
    assert due.transfer_group == "order-1"
    assert due.currency == "usd"
    assert due.attempts == 0
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert view.fee_source is FeeSource.ACTUAL


def test_a_deferred_transfer_waits_and_counts_attempts(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot())
    ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1"))
    ledger.transfer_deferred("ch_1", "rate limited", 1000.0)
    assert ledger.due_transfers(999.0, 10) == []
    (due,) = ledger.due_transfers(1000.0, 10)
    assert due.attempts == 1
    assert due.idempotency_key == key("ch_1")  # the same key on a transient retry


def test_created_transfer_is_done(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot())
    ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1"))
    ledger.transfer_created("ch_1", "tr_1")
    ledger.transfer_failed("ch_1", "late", "a late failure must not undo a success")
    assert ledger.due_transfers(time.time(), 10) == []
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert (view.transfer_status, view.transfer_id, view.error_code) == (
        TransferStatus.CREATED,
        "tr_1",
        "",
    )


def test_failed_transfer_retries_under_new_keys(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot())
    assert ledger.retry_transfer("ch_1") is False  # no transfer at all
    ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1"))
    assert ledger.retry_transfer("ch_1") is False  # pending, not failed
    ledger.transfer_failed("ch_1", "insufficient_funds", "Balance too low")
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert (view.transfer_status, view.error_code, view.error_message) == (
        TransferStatus.FAILED,
        "insufficient_funds",
        "Balance too low",
    )
    assert ledger.due_transfers(time.time(), 10) == []
    assert ledger.retry_transfer("ch_1") is True
    assert ledger.retry_transfer("ch_1") is False  # already pending again
    (due,) = ledger.due_transfers(time.time(), 10)
    assert due.idempotency_key == "ursus-transfer-ch_1-retry1"
    ledger.transfer_failed("ch_1", "insufficient_funds", "Still too low")
    assert ledger.retry_transfer("ch_1") is True
    (due,) = ledger.due_transfers(time.time(), 10)
    assert due.idempotency_key == "ursus-transfer-ch_1-retry2"
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert (view.transfer_status, view.error_code) == (TransferStatus.PENDING, "")


def test_counts_for_the_header(ledger: Ledger) -> None:
    for n in range(4):
        ledger.upsert_charge(snapshot(f"ch_{n}"))
    ledger.create_transfer("ch_0", usd_split(), ACCOUNT, key("ch_0"))
    ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1"))
    ledger.transfer_failed("ch_1", "x", "y")
    ledger.create_transfer("ch_2", usd_split(), ACCOUNT, key("ch_2"))
    ledger.transfer_created("ch_2", "tr_2")
    record(ledger, "evt_1")
    counts = ledger.counts()
    assert (counts.charges, counts.pending_transfers, counts.failed_transfers) == (4, 1, 1)
    assert counts.pending_events == 1


# --- refunds, reversals, timeline -------------------------------------------------------------


def test_refunds_are_recorded_once_and_raise_amount_refunded(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot())
    assert ledger.record_refund("ch_1", "re_1", 1000, 1_780_000_100) is True
    assert ledger.record_refund("ch_1", "re_1", 1000, 1_780_000_100) is False
    assert ledger.record_refund("ch_1", "re_2", 500, 1_780_000_200) is True
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert view.amount_refunded == 1500
    ledger.upsert_charge(snapshot(amount_refunded=1000))  # stale: must not move backwards
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert view.amount_refunded == 1500


def test_reversals_add_up_once_per_id_until_reversed(ledger: Ledger) -> None:
    ledger.upsert_charge(snapshot())
    ledger.create_transfer("ch_1", usd_split(), ACCOUNT, key("ch_1"))
    ledger.transfer_reversed("ch_1", "trr_0", 100)  # not created yet: ignored
    ledger.transfer_created("ch_1", "tr_1")
    ledger.transfer_reversed("ch_1", "trr_1", 4000)
    ledger.transfer_reversed("ch_1", "trr_1", 4000)  # the same reversal again
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert view.transfer_status is TransferStatus.CREATED  # partly reversed
    ledger.transfer_reversed("ch_1", "trr_2", 5583)
    view = ledger.get_charge("ch_1")
    assert view is not None
    assert view.transfer_status is TransferStatus.REVERSED


def test_timeline_in_order(ledger: Ledger) -> None:
    ledger.add_timeline("ch_1", TimelineKind.EVENT, "charge.succeeded evt_1", at=10.0)
    ledger.add_timeline("ch_1", TimelineKind.FEE, "fee 3.20 (estimate)", at=5.0)
    ledger.add_timeline("ch_2", TimelineKind.EVENT, "other charge")
    entries = ledger.timeline("ch_1")
    assert [(e.kind, e.detail, e.at) for e in entries] == [
        (TimelineKind.EVENT, "charge.succeeded evt_1", 10.0),
        (TimelineKind.FEE, "fee 3.20 (estimate)", 5.0),
    ]
    assert all(e.charge_id == "ch_1" for e in entries)
    assert ledger.timeline("ch_none") == []


# --- migrations ------------------------------------------------------------------------------


def make_v1_database(path: Path) -> None:
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        schema.apply_migration(conn, 1)
        conn.execute(
            text(
                "INSERT INTO charges (charge_id, payment_intent_id, order_id, currency, amount,"
                " amount_refunded, captured, paid, status, created, livemode, transfer_group,"
                " balance_transaction_id, updated_at) VALUES ('ch_old', 'pi_old', 'order-old',"
                " 'usd', 10000, 0, 1, 1, 'succeeded', 1700000000, 0, 'order-old', '', 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO events (event_id, type, created, livemode, object_id, raw,"
                " received_at) VALUES ('evt_old', 'charge.succeeded', 1, 0, 'ch_old', x'7b7d', 0)"
            )
        )
    engine.dispose()


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def test_a_version_1_database_is_migrated_with_its_data_intact(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    make_v1_database(path)
    assert "next_check_at" not in columns(path, "charges")
    with Ledger.open(f"sqlite:///{path}") as led:
        view = led.get_charge("ch_old")
        assert view is not None
        assert (view.gross, view.order_id, view.seq) == (10000, "order-old", 1)
        assert [e.raw for e in led.pending_events(10, time.time())] == [b"{}"]
        # Migration 2's columns work on the old row.
        assert led.set_awaiting_fee("ch_old", 50.0) == 50.0
        assert led.charges_awaiting_fee(now=0.0, limit=10) == ["ch_old"]
    assert {"fee_deadline", "next_check_at"} <= columns(path, "charges")
    with sqlite3.connect(path) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_version ORDER BY 1")]
        indexes = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert versions == [1, 2]
    assert "ix_charges_fee_check" in indexes
    with Ledger.open(f"sqlite:///{path}") as again:  # reopening migrates nothing
        assert again.get_charge("ch_old") is not None
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM schema_version").fetchone() == (2,)


def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "l.sqlite3"
    Ledger.open(f"sqlite:///{path}").close()

    def broken(conn: object) -> None:
        conn.execute(text("CREATE TABLE half_done (x INTEGER)"))  # type: ignore[attr-defined]
        conn.execute(text("SELECT * FROM no_such_table"))  # type: ignore[attr-defined]

    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    monkeypatch.setattr(ledger_core, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StorageError, match="no such table"):
        Ledger.open(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    assert "half_done" not in tables


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite3"
    Ledger.open(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageError, match="newer"):
        Ledger.open(f"sqlite:///{path}")


def test_the_schema_compiles_for_postgresql() -> None:
    from sqlalchemy import create_mock_engine

    ddl: list[str] = []

    def collect(sql: object, *_args: object, **_kwargs: object) -> None:
        ddl.append(str(sql.compile(dialect=engine.dialect)))  # type: ignore[attr-defined]

    engine = create_mock_engine("postgresql://", collect)  # type: ignore[arg-type]
    schema.metadata.create_all(engine, checkfirst=False)
    events = next(d for d in ddl if "CREATE TABLE events" in d)
    assert "seq BIGSERIAL" in events
    assert "raw BYTEA" in events
    assert any("UNIQUE (charge_id)" in d for d in ddl if "CREATE TABLE transfers" in d)


def test_close_waits_for_a_unit_in_progress_on_another_thread(tmp_path: Path) -> None:
    # Closing a connection under another thread's transaction rolls it back (or worse):
    # close() waits for calls in progress, and refuses new ones meanwhile.
    db = tmp_path / "busy.sqlite3"
    led = Ledger.open(f"sqlite:///{db}")
    led.record_event("evt_busy", "charge.succeeded", 1, False, "ch_busy", b"{}")
    in_unit, release = threading.Event(), threading.Event()

    def step() -> None:
        with led.unit() as u:
            u.mark_event("evt_busy", EventStatus.PROCESSED)
            in_unit.set()
            release.wait(5)

    worker = threading.Thread(target=step)
    worker.start()
    assert in_unit.wait(5)
    closer = threading.Thread(target=led.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()  # waiting for the unit, not closing under it
    with pytest.raises(StorageError, match="closed"):
        led.counts()  # no new call starts meanwhile
    release.set()
    worker.join(5)
    closer.join(5)
    assert not closer.is_alive()
    with sqlite3.connect(db) as check:
        status = check.execute("SELECT status FROM events WHERE event_id = 'evt_busy'")
        assert status.fetchone() == ("processed",)  # the unit committed
