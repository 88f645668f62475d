"""Processor: inbox events -> charge re-fetch -> fee split -> exactly one transfer (FakeStripe)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_stripe import ACCOUNT, FakeStripe, in_use, make_event, network, permanent, transient

from gateway.config import FeeSourcePolicy, GatewayConfig, Secrets, Settings
from gateway.fees import FeeSource
from gateway.ledger import Ledger
from gateway.models import ChargeView, DueTransfer, EventStatus, TimelineKind, TransferStatus
from gateway.processor import (
    ZERO_AMOUNT_CODE,
    Processor,
    RetryOutcome,
    retry_transfer,
    transfer_key,
)

T0 = 1_700_000_000.0


class Clock:
    """An injectable clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/l.sqlite3"


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    led = Ledger.open(db_url)
    try:
        yield led
    finally:
        led.close()


@pytest.fixture
def fake(clock: Clock) -> FakeStripe:
    return FakeStripe(clock)


def make_config(tmp_path: Path, **settings: Any) -> GatewayConfig:
    secrets = Secrets(
        stripe_secret_key="sk_test_processor0000",
        webhook_secrets=("whsec_test0000000",),
        connected_account_id=ACCOUNT,
        api_keys=("k" * 20,),
    )
    return GatewayConfig(secrets=secrets, settings=Settings(**settings), data_dir=tmp_path)


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    return make_config(tmp_path)


def processor(ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock) -> Processor:
    # rand=0: the shortest jittered delay, so tests can step the clock exactly.
    return Processor(ledger, fake, config, clock, rand=lambda: 0.0)


_seq = iter(range(1, 1_000_000))


def deliver(ledger: Ledger, type_: str, object_id: str, event_id: str | None = None) -> str:
    event_id = event_id or f"evt_{next(_seq)}"
    raw = make_event(event_id, type_, object_id)
    ledger.record_event(event_id, type_, 1_700_000_000, False, object_id, raw)
    return event_id


def _event_row(ledger: Ledger, event_id: str) -> tuple[str, str]:
    # The ledger has no per-event read (the GUI only counts); peek at the row with
    # sqlite3 on the same file.
    path = str(ledger._engine.url.database)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute(
            "SELECT status, last_error FROM events WHERE event_id = ?", (event_id,)
        ).fetchone()
    assert row is not None, event_id
    return str(row[0]), str(row[1])


def status_of(ledger: Ledger, event_id: str) -> EventStatus:
    return EventStatus(_event_row(ledger, event_id)[0])


def event_error(ledger: Ledger, event_id: str) -> str:
    return _event_row(ledger, event_id)[1]


def view(ledger: Ledger, charge_id: str) -> ChargeView:
    v = ledger.get_charge(charge_id)
    assert v is not None
    return v


# -- the happy paths --------------------------------------------------------------------------


def test_succeeded_estimate_creates_one_transfer_with_exact_params(
    ledger: Ledger, fake: FakeStripe, clock: Clock, tmp_path: Path
) -> None:
    config = make_config(tmp_path, fee_source=FeeSourcePolicy.ESTIMATE)
    ch = fake.add_charge(amount=10000, order_id="order-42")
    evt = deliver(ledger, "charge.succeeded", ch)
    processor(ledger, fake, config, clock).run_once()

    [tr] = fake.transfers.values()
    assert (tr.amount, tr.currency, tr.destination) == (9583, "usd", ACCOUNT)
    assert (tr.source_transaction, tr.transfer_group) == (ch, "order-42")
    assert tr.idempotency_key == f"ursus-transfer-{ch}" == transfer_key(ch)
    assert tr.metadata["charge_id"] == ch and tr.metadata["order_id"] == "order-42"
    v = view(ledger, ch)
    assert (v.stripe_fee, v.commission, v.transfer_amount) == (320, 97, 9583)
    assert v.fee_source is FeeSource.ESTIMATE
    assert (v.transfer_status, v.transfer_id) == (TransferStatus.CREATED, tr.transfer_id)
    assert status_of(ledger, evt) is EventStatus.PROCESSED
    kinds = [e.kind for e in ledger.timeline(ch)]
    for kind in (TimelineKind.EVENT, TimelineKind.CHARGE, TimelineKind.FEE,
                 TimelineKind.TRANSFER_REQUEST, TimelineKind.TRANSFER_CREATED):  # fmt: skip
        assert kind in kinds


def test_actual_fee_is_used_when_known(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(amount=10000, fee=350)
    deliver(ledger, "charge.succeeded", ch)
    processor(ledger, fake, config, clock).run_once()
    [tr] = fake.transfers.values()
    assert tr.amount == 9553  # 10000 - 350 = 9650; 1% of it = 96.5 -> 97
    v = view(ledger, ch)
    assert (v.stripe_fee, v.fee_source, v.commission) == (350, FeeSource.ACTUAL, 97)


def test_manual_capture_waits_for_charge_captured(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(captured=False, fee=None)
    proc = processor(ledger, fake, config, clock)
    deliver(ledger, "charge.succeeded", ch)
    proc.run_once()
    assert fake.count("create_transfer") == 0
    assert view(ledger, ch).transfer_status is TransferStatus.NONE
    assert ledger.charges_awaiting_fee(clock() + 10_000, 10) == []  # not waiting for a fee

    fake.capture(ch)
    fake.set_fee(ch, 330)
    deliver(ledger, "charge.captured", ch)
    proc.run_once()
    [tr] = fake.transfers.values()
    assert tr.amount == 9573  # 10000 - 330 = 9670, commission 97
    assert view(ledger, ch).transfer_status is TransferStatus.CREATED


def test_charge_updated_brings_the_actual_fee(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=None)
    proc = processor(ledger, fake, config, clock)
    deliver(ledger, "charge.succeeded", ch)
    proc.run_once()
    assert fake.count("create_transfer") == 0
    assert view(ledger, ch).stripe_fee is None

    clock.advance(1)
    fake.set_fee(ch, 350)
    deliver(ledger, "charge.updated", ch)
    proc.run_once()
    v = view(ledger, ch)
    assert (v.stripe_fee, v.fee_source, v.transfer_amount) == (350, FeeSource.ACTUAL, 9553)
    assert fake.count("create_transfer") == 1


def test_fee_recheck_finds_the_fee_without_an_event(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=None)
    proc = processor(ledger, fake, config, clock)
    deliver(ledger, "charge.succeeded", ch)
    proc.run_once()
    fetches = fake.count("retrieve_charge")
    proc.run_once()  # the re-check is not due yet
    assert fake.count("retrieve_charge") == fetches

    fake.set_fee(ch, 340)
    clock.advance(10)
    proc.run_once()
    assert fake.count("retrieve_charge") == fetches + 1
    assert view(ledger, ch).fee_source is FeeSource.ACTUAL
    assert [t.amount for t in fake.transfers.values()] == [9563]


def test_fee_fallback_after_the_deadline_is_flagged(
    ledger: Ledger, fake: FakeStripe, clock: Clock, tmp_path: Path
) -> None:
    config = make_config(tmp_path, fee_wait_seconds=900)
    ch = fake.add_charge(fee=None)
    proc = processor(ledger, fake, config, clock)
    deliver(ledger, "charge.succeeded", ch)
    proc.run_once()
    for _ in range(25):  # re-checks back off while the fee stays unknown
        clock.advance(40)
        proc.run_once()
        if clock() < T0 + 899:
            assert fake.count("create_transfer") == 0
    assert clock() > T0 + 900
    v = view(ledger, ch)
    assert (v.stripe_fee, v.fee_source, v.transfer_amount) == (
        320,
        FeeSource.ESTIMATE_FALLBACK,
        9583,
    )
    assert 5 < fake.count("retrieve_charge") < 20  # backed off, not once per pass
    assert fake.count("create_transfer") == 1


def test_fee_wait_zero_falls_back_at_once(
    ledger: Ledger, fake: FakeStripe, clock: Clock, tmp_path: Path
) -> None:
    config = make_config(tmp_path, fee_wait_seconds=0)
    ch = fake.add_charge(fee=None)
    deliver(ledger, "charge.succeeded", ch)
    processor(ledger, fake, config, clock).run_once()
    assert view(ledger, ch).fee_source is FeeSource.ESTIMATE_FALLBACK


def test_fee_fallback_when_stripe_is_unreachable_at_the_deadline(
    ledger: Ledger, fake: FakeStripe, clock: Clock, tmp_path: Path
) -> None:
    config = make_config(tmp_path, fee_wait_seconds=60)
    ch = fake.add_charge(fee=None)
    proc = processor(ledger, fake, config, clock)
    deliver(ledger, "charge.succeeded", ch)
    proc.run_once()
    fake.fail("retrieve_charge", *[network() for _ in range(50)])
    for _ in range(10):
        clock.advance(15)
        proc.run_once()
    assert view(ledger, ch).fee_source is FeeSource.ESTIMATE_FALLBACK
    assert fake.count("create_transfer") == 1


# -- refunds --------------------------------------------------------------------------------


def test_refund_is_recorded_and_not_reversed_by_default(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    proc = processor(ledger, fake, config, clock)
    deliver(ledger, "charge.succeeded", ch)
    proc.run_once()
    fake.refund(ch, 4000)
    evt = deliver(ledger, "charge.refunded", ch)
    proc.run_once()
    deliver(ledger, "charge.refunded", ch)  # a second delivery of the same news
    proc.run_once()
    v = view(ledger, ch)
    assert v.amount_refunded == 4000
    assert v.transfer_status is TransferStatus.CREATED
    assert fake.count("create_reversal") == 0
    assert status_of(ledger, evt) is EventStatus.PROCESSED
    assert TimelineKind.REFUND in [e.kind for e in ledger.timeline(ch)]


def test_refund_reverses_proportionally_when_enabled(
    ledger: Ledger, fake: FakeStripe, clock: Clock, tmp_path: Path
) -> None:
    config = make_config(tmp_path, reverse_transfer_on_refund=True)
    ch = fake.add_charge(fee=320)
    proc = processor(ledger, fake, config, clock)
    deliver(ledger, "charge.succeeded", ch)
    proc.run_once()
    [tr] = fake.transfers.values()
    assert tr.amount == 9583

    fake.refund(ch, 5000)
    deliver(ledger, "charge.refunded", ch)
    proc.run_once()
    assert [r.amount for r in fake.reversals[tr.transfer_id]] == [4792]  # 9583 / 2, half up
    assert view(ledger, ch).transfer_status is TransferStatus.CREATED
    deliver(ledger, "charge.refunded", ch)  # duplicate news: nothing more reversed
    proc.run_once()
    assert fake.count("create_reversal") == 1

    fake.refund(ch, 5000)
    deliver(ledger, "charge.refunded", ch)
    proc.run_once()
    assert [r.amount for r in fake.reversals[tr.transfer_id]] == [4792, 4791]
    assert view(ledger, ch).transfer_status is TransferStatus.REVERSED
    keys = [k for k in fake._keys if k.startswith("ursus-reversal-")]
    assert keys == [f"ursus-reversal-{ch}-5000", f"ursus-reversal-{ch}-10000"]


def test_refund_before_the_transfer_waits_when_reversing(
    ledger: Ledger, fake: FakeStripe, clock: Clock, tmp_path: Path
) -> None:
    config = make_config(tmp_path, reverse_transfer_on_refund=True)
    ch = fake.add_charge(fee=320)
    proc = processor(ledger, fake, config, clock)
    fake.fail("create_transfer", transient())
    deliver(ledger, "charge.succeeded", ch)
    fake.refund(ch, 10000 - 9583)  # leaves exactly enough for the transfer
    evt = deliver(ledger, "charge.refunded", ch)
    proc.run_once()
    assert status_of(ledger, evt) is EventStatus.PENDING  # transfer not created yet
    clock.advance(700)
    proc.run_once()  # events come before transfers in a pass: the transfer is made now
    assert status_of(ledger, evt) is EventStatus.PENDING
    clock.advance(700)
    proc.run_once()
    assert status_of(ledger, evt) is EventStatus.PROCESSED
    [tr] = fake.transfers.values()
    assert [r.amount for r in fake.reversals[tr.transfer_id]] == [400]  # 9583 * 417/10000


def test_a_refund_before_the_transfer_still_pays_the_vendor_after_a_retry(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    """The platform absorbs refunds: the vendor is owed the whole split even then."""
    ch = fake.add_charge(fee=320)
    proc = processor(ledger, fake, config, clock)
    fake.fail("create_transfer", transient())  # the transfer is not made at once...
    deliver(ledger, "charge.succeeded", ch)
    proc.run_once()
    fake.refund(ch, 5000)  # ...and half the charge is refunded meanwhile
    deliver(ledger, "charge.refunded", ch)
    clock.advance(700)
    proc.run_once()
    v = view(ledger, ch)
    assert v.transfer_status is TransferStatus.FAILED  # Stripe: more than is left of it
    assert v.error_code == "amount_too_large"
    assert "Retry transfer" in v.error_message
    assert not fake.transfers

    assert retry_transfer(ledger, fake, ch)
    proc.run_once()
    v = view(ledger, ch)
    assert v.transfer_status is TransferStatus.CREATED
    [tr] = fake.transfers.values()
    assert tr.amount == 9583  # the whole split, from the available balance
    assert tr.source_transaction == ""
    assert tr.idempotency_key == f"ursus-transfer-{ch}-retry1"


def test_refund_list_unreachable_defers_the_event(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=320)
    fake.refund(ch, 100)
    fake.fail("list_refunds", network())
    evt = deliver(ledger, "charge.refunded", ch)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    assert status_of(ledger, evt) is EventStatus.PENDING
    clock.advance(5)
    proc.run_once()
    assert status_of(ledger, evt) is EventStatus.PROCESSED
    assert view(ledger, ch).amount_refunded == 100


# -- event kinds, order, duplicates --------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "object_id"),
    [
        ("payment_intent.succeeded", "pi_1"),
        ("transfer.created", "tr_1"),
        ("customer.created", "cus_1"),
        ("charge.failed", "ch_nope"),
    ],
)
def test_other_types_are_stored_and_ignored(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock, type_: str,
    object_id: str,
) -> None:  # fmt: skip
    evt = deliver(ledger, type_, object_id)
    assert processor(ledger, fake, config, clock).run_once() == 1
    assert status_of(ledger, evt) is EventStatus.IGNORED
    assert fake.calls == []


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1, 2]", b'{"data": {}}', b'{"data": {"object": {"id": "pi_123"}}}'],
)
def test_unreadable_event_is_failed_with_reason(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock, raw: bytes
) -> None:
    ledger.record_event("evt_bad", "charge.succeeded", 1, False, "", raw)
    processor(ledger, fake, config, clock).run_once()
    assert status_of(ledger, "evt_bad") is EventStatus.FAILED
    assert "unreadable event" in event_error(ledger, "evt_bad")
    assert fake.calls == []


def test_unknown_charge_fails_the_event_with_stripes_reason(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    evt = deliver(ledger, "charge.succeeded", "ch_missing")
    processor(ledger, fake, config, clock).run_once()
    assert status_of(ledger, evt) is EventStatus.FAILED
    assert "resource_missing" in event_error(ledger, evt)


def test_out_of_order_updated_before_succeeded(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    deliver(ledger, "charge.updated", ch)
    deliver(ledger, "charge.succeeded", ch)
    processor(ledger, fake, config, clock).run_once()
    assert fake.count("create_transfer") == 1
    assert [t.amount for t in fake.transfers.values()] == [9553]


def test_duplicates_make_exactly_one_transfer(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    evt = deliver(ledger, "charge.succeeded", ch)
    assert not ledger.record_event(evt, "charge.succeeded", 1, False, ch, b"{}")
    proc = processor(ledger, fake, config, clock)
    for type_ in ("charge.succeeded", "charge.updated", "charge.captured", "charge.updated"):
        deliver(ledger, type_, ch)
    proc.run_once()
    deliver(ledger, "charge.updated", ch)
    proc.run_once()
    assert len(fake.transfers) == 1
    assert fake.count("create_transfer") == 1
    assert ledger.event_counts()[EventStatus.PROCESSED] == 6


def test_uncaptured_or_unpaid_charges_never_transfer(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    failed = fake.add_charge(paid=False, status="failed", fee=None)
    deliver(ledger, "charge.updated", failed)
    processor(ledger, fake, config, clock).run_once()
    assert fake.count("create_transfer") == 0
    assert view(ledger, failed).transfer_status is TransferStatus.NONE


def test_a_bug_in_one_event_does_not_block_the_inbox(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch1 = fake.add_charge(fee=350, order_id="o-1")
    ch2 = fake.add_charge(fee=350, order_id="o-2")
    fake.fail("retrieve_charge", RuntimeError("boom"))
    evt1 = deliver(ledger, "charge.succeeded", ch1)
    deliver(ledger, "charge.succeeded", ch2)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    assert status_of(ledger, evt1) is EventStatus.PENDING
    assert event_error(ledger, evt1) == "internal error: RuntimeError"
    assert view(ledger, ch2).transfer_status is TransferStatus.CREATED
    clock.advance(5)
    proc.run_once()
    assert view(ledger, ch1).transfer_status is TransferStatus.CREATED


# -- Stripe failures -------------------------------------------------------------------------


def test_transient_errors_retry_with_the_same_key_then_succeed(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    fake.fail("create_transfer", transient(), network(), transient("rate_limit", 429))
    deliver(ledger, "charge.succeeded", ch)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    assert view(ledger, ch).transfer_status is TransferStatus.PENDING
    assert ledger.due_transfers(clock(), 10) == []  # backing off
    for _ in range(5):
        clock.advance(10)
        proc.run_once()
    assert view(ledger, ch).transfer_status is TransferStatus.CREATED
    assert fake.count("create_transfer") == 4
    [tr] = fake.transfers.values()
    assert tr.idempotency_key == transfer_key(ch)
    assert TimelineKind.TRANSFER_ERROR in [e.kind for e in ledger.timeline(ch)]


def test_backoff_grows(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    fake.fail("create_transfer", *[transient() for _ in range(6)])
    deliver(ledger, "charge.succeeded", ch)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    gaps = []
    for _ in range(5):
        start = clock()
        while not ledger.due_transfers(clock(), 1):
            clock.advance(0.5)
        gaps.append(clock() - start)
        proc.run_once()
    assert gaps == sorted(gaps) and gaps[-1] >= 4 * gaps[0]


def test_409_in_use_after_a_lost_answer_is_not_paid_twice(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    # The first request reached Stripe and created the transfer, the answer was lost;
    # the retry then meets the still-running original (409).
    fake.fail("create_transfer", network(), after=True)
    fake.fail("find_transfer", in_use())
    deliver(ledger, "charge.succeeded", ch)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    assert view(ledger, ch).transfer_status is TransferStatus.PENDING
    for _ in range(3):
        clock.advance(10)
        proc.run_once()
    v = view(ledger, ch)
    assert v.transfer_status is TransferStatus.CREATED
    assert len(fake.transfers) == 1 and v.transfer_id in fake.transfers
    assert fake.count("create_transfer") == 1  # found, not created again


def test_409_in_use_is_transient(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    fake.fail("create_transfer", in_use(), in_use())
    deliver(ledger, "charge.succeeded", ch)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    clock.advance(10)
    proc.run_once()
    assert view(ledger, ch).transfer_status is TransferStatus.PENDING
    clock.advance(10)
    proc.run_once()
    assert view(ledger, ch).transfer_status is TransferStatus.CREATED
    assert len(fake.transfers) == 1


def test_refetch_transient_defers_the_event(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    fake.fail("retrieve_charge", network(), transient())
    evt = deliver(ledger, "charge.succeeded", ch)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    [pending] = ledger.pending_events(10, float("inf"))
    assert (pending.event_id, pending.attempts) == (evt, 1)
    assert "unreachable" in pending.last_error
    clock.advance(1.5)
    proc.run_once()
    clock.advance(2.5)
    proc.run_once()
    assert status_of(ledger, evt) is EventStatus.PROCESSED
    assert fake.count("create_transfer") == 1


def test_zero_transfer_is_failed_without_calling_stripe(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(amount=50, fee=50)
    deliver(ledger, "charge.succeeded", ch)
    processor(ledger, fake, config, clock).run_once()
    v = view(ledger, ch)
    assert (v.transfer_status, v.error_code) == (TransferStatus.FAILED, ZERO_AMOUNT_CODE)
    assert fake.count("create_transfer") == 0


# -- permanent errors and manual retry ----------------------------------------------------


def test_permanent_error_recorded_then_manual_retry_creates_it(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    fake.fail("create_transfer", permanent("balance_insufficient"))
    deliver(ledger, "charge.succeeded", ch)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    v = view(ledger, ch)
    assert (v.transfer_status, v.error_code) == (TransferStatus.FAILED, "balance_insufficient")
    assert "balance_insufficient" in v.error_message
    clock.advance(10_000)
    proc.run_once()
    assert fake.count("create_transfer") == 1  # a failed transfer is not retried alone

    result = retry_transfer(ledger, fake, ch)
    assert result and result.outcome is RetryOutcome.QUEUED
    assert fake.count("find_transfer") == 1
    proc.run_once()
    v = view(ledger, ch)
    assert v.transfer_status is TransferStatus.CREATED
    [tr] = fake.transfers.values()
    assert tr.idempotency_key == f"ursus-transfer-{ch}-retry1"
    assert TimelineKind.TRANSFER_RETRY in [e.kind for e in ledger.timeline(ch)]


def test_manual_retry_finds_an_existing_transfer(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ch = fake.add_charge(fee=350)
    fake.fail("create_transfer", permanent("account_invalid"))
    deliver(ledger, "charge.succeeded", ch)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    existing = fake.add_transfer(ch, 9553, "order-1")  # made by someone, somehow

    result = retry_transfer(ledger, fake, ch)
    assert result and result.outcome is RetryOutcome.ALREADY_CREATED
    assert result.transfer_id == existing
    proc.run_once()
    v = view(ledger, ch)
    assert (v.transfer_status, v.transfer_id) == (TransferStatus.CREATED, existing)
    assert fake.count("create_transfer") == 1  # only the first, refused attempt


def test_manual_retry_refusals(
    ledger: Ledger, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    assert retry_transfer(ledger, fake, "ch_unknown").outcome is RetryOutcome.UNKNOWN_CHARGE
    ch = fake.add_charge(fee=350)
    deliver(ledger, "charge.succeeded", ch)
    proc = processor(ledger, fake, config, clock)
    proc.run_once()
    not_failed = retry_transfer(ledger, fake, ch)
    assert not not_failed and not_failed.outcome is RetryOutcome.NOT_FAILED

    ch2 = fake.add_charge(fee=350, order_id="order-2")
    fake.fail("create_transfer", permanent())
    deliver(ledger, "charge.succeeded", ch2)
    proc.run_once()
    fake.fail("find_transfer", network())
    unavailable = retry_transfer(ledger, fake, ch2)
    assert not unavailable and unavailable.outcome is RetryOutcome.STRIPE_UNAVAILABLE
    assert view(ledger, ch2).transfer_status is TransferStatus.FAILED  # nothing changed
    assert "sk_test" not in str(unavailable)


# -- restarts, instances, the thread -------------------------------------------------------


def test_restart_resumes_pending_work(
    db_url: str, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    first = Ledger.open(db_url)
    ch1 = fake.add_charge(fee=350, order_id="o-1")
    ch2 = fake.add_charge(fee=350, order_id="o-2")
    fake.fail("create_transfer", network())
    deliver(first, "charge.succeeded", ch1)
    processor(first, fake, config, clock).run_once()  # ch1's transfer deferred
    deliver(first, "charge.succeeded", ch2)  # stored, never processed: the app "crashed"
    first.close()

    clock.advance(60)
    second = Ledger.open(db_url)
    try:
        processor(second, fake, config, clock).run_once()
        for ch in (ch1, ch2):
            assert view(second, ch).transfer_status is TransferStatus.CREATED
        assert len(fake.transfers) == 2
    finally:
        second.close()


def test_two_processors_on_one_database_pay_once(
    db_url: str, fake: FakeStripe, config: GatewayConfig, clock: Clock
) -> None:
    ledgers = [Ledger.open(db_url), Ledger.open(db_url)]
    try:
        charges = [fake.add_charge(fee=350, order_id=f"o-{i}") for i in range(10)]
        for ch in charges:
            deliver(ledgers[0], "charge.succeeded", ch)
            deliver(ledgers[0], "charge.updated", ch)
        procs = [processor(led, fake, config, clock) for led in ledgers]
        barrier = threading.Barrier(2)

        def run(p: Processor) -> None:
            barrier.wait()
            p.run_once()

        threads = [threading.Thread(target=run, args=(p,)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for ch in charges:
            assert len(fake.transfers_for(ch)) == 1
            assert view(ledgers[1], ch).transfer_status is TransferStatus.CREATED
    finally:
        for led in ledgers:
            led.close()


def test_thread_wakes_on_events_and_stops_cleanly(ledger: Ledger, config: GatewayConfig) -> None:
    fake = FakeStripe()
    proc = Processor(ledger, fake, config, poll_interval=30.0)  # real clock; wake() matters
    proc.start()
    try:
        assert proc.is_running
        ch = fake.add_charge(fee=350)
        deliver(ledger, "charge.succeeded", ch)
        proc.wake()
        deadline = time.monotonic() + 10
        while view_or_none(ledger, ch) is None or (
            view(ledger, ch).transfer_status is not TransferStatus.CREATED
        ):
            assert time.monotonic() < deadline, "processor did not pick the event up"
            time.sleep(0.01)
    finally:
        proc.stop(timeout=10)
    assert not proc.is_running
    assert not [t for t in threading.enumerate() if t.name == "ursus-processor"]
    proc.stop()  # idempotent
    ch2 = fake.add_charge(fee=350, order_id="o-after-stop")
    deliver(ledger, "charge.succeeded", ch2)
    assert proc.run_once() >= 2  # a stopped processor still works synchronously
    assert view(ledger, ch2).transfer_status is TransferStatus.CREATED


def view_or_none(ledger: Ledger, charge_id: str) -> ChargeView | None:
    return ledger.get_charge(charge_id)


class BlockingStripe(FakeStripe):
    """create_transfer waits until the test lets it go (a slow Stripe call in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def create_transfer(self, t: DueTransfer, *, from_charge: bool = True) -> str:
        self.entered.set()
        assert self.release.wait(10)
        return super().create_transfer(t, from_charge=from_charge)


def test_stop_finishes_the_current_item_and_leaves_the_rest(
    ledger: Ledger, config: GatewayConfig
) -> None:
    fake = BlockingStripe()
    charges = [fake.add_charge(fee=350, order_id=f"o-{i}") for i in range(3)]
    for ch in charges:
        deliver(ledger, "charge.succeeded", ch)
    proc = Processor(ledger, fake, config, poll_interval=30.0)
    proc.start()
    assert fake.entered.wait(10)
    stopper = threading.Thread(target=proc.stop, kwargs={"timeout": 10})
    stopper.start()
    fake.release.set()
    stopper.join(15)
    assert not proc.is_running
    statuses = [view(ledger, ch).transfer_status for ch in charges]
    assert statuses.count(TransferStatus.CREATED) == 1  # the one in flight was recorded
    assert statuses.count(TransferStatus.PENDING) == 2  # the rest wait for the next start
    assert len(fake.transfers) == 1
