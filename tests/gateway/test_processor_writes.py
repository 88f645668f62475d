"""How many write transactions (each an fsync) the processor spends on one sale."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fake_stripe import ACCOUNT, FakeStripe, make_event, transient

from gateway.config import GatewayConfig, Secrets, Settings
from gateway.ledger import Ledger
from gateway.models import EventStatus, TimelineKind, TransferStatus
from gateway.processor import Processor

# A sale the way the sandbox (and Stripe, API >= 2024-04-10) delivers it; the fee is
# known by the time charge.succeeded is re-fetched. transfer.created follows the transfer.
SALE_EVENTS = ("payment_intent.created", "charge.succeeded", "payment_intent.succeeded",
               "charge.updated")  # fmt: skip
# One commit per event, plus one for the transfer made at Stripe (16 before units).
MAX_WRITES_PER_SALE = 6


@dataclass
class WriteCounter:
    """Counts the write transactions a thread's raw sqlite3 connection commits."""

    statements: list[str] = field(default_factory=list)
    writes: int = 0

    def trace(self, raw: sqlite3.Connection, sql: str) -> None:
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        self.statements.append(sql)
        if sql.strip().upper().startswith("BEGIN IMMEDIATE"):
            self.writes += 1
        elif head in ("INSERT", "UPDATE", "DELETE") and not raw.in_transaction:
            self.writes += 1  # an autocommit write is its own transaction


@contextmanager
def counting_writes(ledger: Ledger) -> Iterator[WriteCounter]:
    """Trace the calling thread's ledger connection (the processor runs on it here)."""
    raw = ledger._conns.dbapi()  # type: ignore[union-attr]
    counter = WriteCounter()
    raw.set_trace_callback(lambda sql: counter.trace(raw, sql))
    try:
        yield counter
    finally:
        raw.set_trace_callback(None)


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    secrets = Secrets(
        stripe_secret_key="sk_test_writes0000",
        webhook_secrets=("whsec_test0000000",),
        connected_account_id=ACCOUNT,
        api_keys=("k" * 20,),
    )
    return GatewayConfig(secrets=secrets, settings=Settings(), data_dir=tmp_path)


def deliver(ledger: Ledger, type_: str, obj: str, event_id: str) -> None:
    ledger.record_event(event_id, type_, 1, False, obj, make_event(event_id, type_, obj))


def sale(ledger: Ledger, proc: Processor, fake: FakeStripe, n: int, *, batched: bool) -> str:
    """One sale's events, a processor pass after each (or one pass for all of them)."""
    ch = fake.add_charge(fee=320, order_id=f"order-{n}")
    for i, type_ in enumerate(SALE_EVENTS):
        obj = ch if type_.startswith("charge.") else f"pi_for_{ch}"
        deliver(ledger, type_, obj, f"evt_{n}_{i}")
        if not batched:
            proc.run_once()
    proc.run_once()
    deliver(ledger, "transfer.created", "tr_x", f"evt_{n}_tr")
    proc.run_once()
    return ch


@pytest.mark.parametrize(("batched", "most"), [(False, MAX_WRITES_PER_SALE), (True, 4)])
def test_a_sale_makes_at_most_n_write_transactions(
    ledger: Ledger, config: GatewayConfig, batched: bool, most: int
) -> None:
    fake = FakeStripe()
    proc = Processor(ledger, fake, config, rand=lambda: 0.0)
    sale(ledger, proc, fake, 0, batched=batched)  # warm-up
    with counting_writes(ledger) as counter:
        ch = sale(ledger, proc, fake, 1, batched=batched)
    v = ledger.get_charge(ch)
    assert v is not None and v.transfer_status is TransferStatus.CREATED
    assert counter.statements, "the trace saw nothing: the count would be meaningless"
    assert counter.writes <= most, counter.writes
    entries = ledger.timeline(ch)
    assert {e.kind for e in entries} == {
        TimelineKind.EVENT, TimelineKind.CHARGE, TimelineKind.FEE,
        TimelineKind.TRANSFER_REQUEST, TimelineKind.TRANSFER_CREATED,
    }  # fmt: skip
    request = next(e for e in entries if e.kind is TimelineKind.TRANSFER_REQUEST)
    created = next(e for e in entries if e.kind is TimelineKind.TRANSFER_CREATED)
    assert request.at <= created.at  # stored together, timed when the request began
    counts = ledger.event_counts()
    assert counts[EventStatus.PENDING] == 0
    assert (counts[EventStatus.IGNORED], counts[EventStatus.PROCESSED]) == (6, 4)


def test_the_counter_sees_every_write(ledger: Ledger) -> None:
    """The counter itself: a known number of separate writes counts exactly."""
    ledger.record_event("evt_c", "x.y", 1, False, "x_1", b"{}")  # the inbox's own connection
    raw = ledger._conns.dbapi()  # type: ignore[union-attr]
    with counting_writes(ledger) as counter:
        raw.execute("UPDATE events SET attempts = 0")  # autocommit: its own transaction
        ledger.add_timeline("ch_c", TimelineKind.EVENT, "one")
        ledger.add_timeline("ch_c", TimelineKind.EVENT, "two")
        ledger.mark_event("evt_c", EventStatus.IGNORED)
    assert counter.writes == 4


def test_a_deferred_transfer_is_one_write(ledger: Ledger, config: GatewayConfig) -> None:
    fake = FakeStripe()
    proc = Processor(ledger, fake, config, rand=lambda: 0.0)
    ch = fake.add_charge(fee=320)
    fake.fail("create_transfer", transient())
    deliver(ledger, "charge.succeeded", ch, "evt_d")
    with counting_writes(ledger) as counter:
        proc.run_once()
    v = ledger.get_charge(ch)
    assert v is not None and v.transfer_status is TransferStatus.PENDING
    assert counter.writes == 2  # the event's step, then the deferral with its entries
    kinds = [e.kind for e in ledger.timeline(ch)]
    assert kinds[-2:] == [TimelineKind.TRANSFER_REQUEST, TimelineKind.TRANSFER_ERROR]


def test_a_step_that_fails_midway_leaves_nothing_and_the_ignored_events_are_still_marked(
    ledger: Ledger, config: GatewayConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeStripe()
    now = [1_700_000_000.0]
    proc = Processor(ledger, fake, config, clock=lambda: now[0], rand=lambda: 0.0)
    ch = fake.add_charge(fee=320)
    deliver(ledger, "payment_intent.created", "pi_1", "evt_pi")
    deliver(ledger, "charge.succeeded", ch, "evt_ch")

    def broken_settle(*_args: object) -> None:
        raise RuntimeError("bug after the charge was written")

    monkeypatch.setattr(proc, "_settle", broken_settle)
    proc.run_once()
    assert ledger.get_charge(ch) is None  # the upsert went back with the rest of the step
    assert ledger.timeline(ch) == []
    [pending] = ledger.pending_events(10, float("inf"))
    assert (pending.event_id, pending.last_error) == ("evt_ch", "internal error: RuntimeError")
    assert ledger.event_counts()[EventStatus.IGNORED] == 1  # pi.created: marked at the end

    monkeypatch.undo()
    now[0] += 60  # past the event's backoff: the step is redone whole
    proc.run_once()
    v = ledger.get_charge(ch)
    assert v is not None and v.transfer_status is TransferStatus.CREATED
    kinds = [e.kind for e in ledger.timeline(ch)]
    assert kinds[:3] == [TimelineKind.EVENT, TimelineKind.CHARGE, TimelineKind.FEE]
    assert kinds.count(TimelineKind.EVENT) == 1  # nothing left over from the failed try
