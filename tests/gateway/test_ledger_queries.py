"""Ledger queries behind the payments table and the export: filters, paging, totals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from snapshots import charge_snapshot

from bench.make_ledger import make_ledger
from gateway.fees import FeeSchedule, FeeSource, split
from gateway.ledger import Ledger
from gateway.models import ChargeFilter, ChargeSnapshot, Totals, TransferStatus

ACCOUNT = "acct_test1234567"
T0 = 1_780_000_000
EVERYTHING = ChargeFilter()


def snapshot(n: int, **changes: object) -> ChargeSnapshot:
    return charge_snapshot(f"ch_{n:03d}", **{"created": T0 + n * 60, **changes})


def add(ledger: Ledger, snap: ChargeSnapshot, status: TransferStatus) -> None:
    """A charge with its transfer in ``status`` (NONE: no transfer row)."""
    ledger.upsert_charge(snap)
    if status is TransferStatus.NONE:
        return
    schedule = FeeSchedule()
    ledger.create_transfer(
        snap.charge_id,
        split(snap.amount, snap.currency, schedule),
        ACCOUNT,
        f"ursus-transfer-{snap.charge_id}",
    )
    if status is TransferStatus.CREATED:
        ledger.transfer_created(snap.charge_id, f"tr_{snap.charge_id[3:]}")
    elif status is TransferStatus.FAILED:
        ledger.transfer_failed(snap.charge_id, "insufficient_funds", "Balance too low")


STATUS_CYCLE = (
    TransferStatus.CREATED,
    TransferStatus.CREATED,
    TransferStatus.PENDING,
    TransferStatus.FAILED,
    TransferStatus.NONE,
)


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    """20 usd charges (seq 1..20, created a minute apart) + 2 jpy + 1 special order id."""
    for n in range(1, 21):
        add(ledger, snapshot(n), STATUS_CYCLE[n % len(STATUS_CYCLE)])
    add(ledger, snapshot(21, currency="jpy", amount=1000), TransferStatus.CREATED)
    add(
        ledger, snapshot(22, currency="jpy", amount=2000, amount_refunded=2000), TransferStatus.NONE
    )
    add(ledger, snapshot(23, order_id="Promo_100%-Bear"), TransferStatus.CREATED)
    return ledger


def ids(views: object) -> list[str]:
    return [v.charge_id for v in views]  # type: ignore[attr-defined]


def test_count_everything(filled: Ledger) -> None:
    assert filled.count_charges(EVERYTHING) == 23


def test_pages_are_newest_first(filled: Ledger) -> None:
    first = filled.charges_page(EVERYTHING, offset=0, limit=5)
    assert ids(first) == ["ch_023", "ch_022", "ch_021", "ch_020", "ch_019"]
    second = filled.charges_page(EVERYTHING, offset=5, limit=5)
    assert ids(second) == ["ch_018", "ch_017", "ch_016", "ch_015", "ch_014"]
    assert ids(filled.charges_page(EVERYTHING, offset=20, limit=10)) == [
        "ch_003",
        "ch_002",
        "ch_001",
    ]
    assert filled.charges_page(EVERYTHING, offset=100, limit=10) == []


def test_paging_through_everything_sees_each_charge_once(filled: Ledger) -> None:
    seen: list[str] = []
    for offset in range(0, 30, 4):
        seen += ids(filled.charges_page(EVERYTHING, offset=offset, limit=4))
    assert len(seen) == 23
    assert len(set(seen)) == 23


def test_views_join_the_transfer(filled: Ledger) -> None:
    by_id = {v.charge_id: v for v in filled.charges_page(EVERYTHING, 0, 100)}
    created = by_id["ch_005"]  # 5 % 5 == 0 -> CREATED
    assert (created.transfer_status, created.transfer_id) == (TransferStatus.CREATED, "tr_005")
    assert (created.stripe_fee, created.net, created.commission, created.transfer_amount) == (
        320,
        9680,
        97,
        9583,
    )
    assert created.fee_source is FeeSource.ESTIMATE
    failed = by_id["ch_003"]
    assert (failed.transfer_status, failed.error_code) == (
        TransferStatus.FAILED,
        "insufficient_funds",
    )
    none = by_id["ch_004"]
    assert (none.transfer_status, none.transfer_id, none.stripe_fee) == (
        TransferStatus.NONE,
        "",
        None,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("order-01", [f"ch_{n:03d}" for n in range(19, 9, -1)]),
        ("ORDER-007", ["ch_007"]),  # case does not matter
        ("pi_02", ["ch_023", "ch_022", "ch_021", "ch_020"]),
        ("ch_013", ["ch_013"]),
        ("100%", ["ch_023"]),  # LIKE wildcards are literal
        ("o_1", ["ch_023"]),  # "_" too: only "Promo_100%" has an "o_1"
        ("nothing-like-this", []),
    ],
)
def test_text_filter_is_a_substring_of_order_charge_or_payment_intent(
    filled: Ledger, text: str, expected: list[str]
) -> None:
    f = ChargeFilter(text=text)
    assert ids(filled.charges_page(f, 0, 100)) == expected
    assert filled.count_charges(f) == len(expected)


def test_status_filter_with_none_meaning_no_transfer_row(filled: Ledger) -> None:
    def select(*statuses: TransferStatus) -> set[str]:
        f = ChargeFilter(statuses=frozenset(statuses))
        found = ids(filled.charges_page(f, 0, 100))
        assert filled.count_charges(f) == len(found)
        return set(found)

    none = select(TransferStatus.NONE)
    assert none == {"ch_004", "ch_009", "ch_014", "ch_019", "ch_022"}
    failed = select(TransferStatus.FAILED)
    assert failed == {"ch_003", "ch_008", "ch_013", "ch_018"}
    assert select(TransferStatus.NONE, TransferStatus.FAILED) == none | failed
    assert select(TransferStatus.REVERSED) == set()
    everything = select(*TransferStatus)
    assert len(everything) == 23


def test_created_since_until(filled: Ledger) -> None:
    f = ChargeFilter(since=T0 + 5 * 60, until=T0 + 8 * 60)  # [since, until)
    assert ids(filled.charges_page(f, 0, 100)) == ["ch_007", "ch_006", "ch_005"]
    assert filled.count_charges(f) == 3
    assert filled.count_charges(ChargeFilter(since=T0 + 22 * 60)) == 2
    assert filled.count_charges(ChargeFilter(until=T0 + 2 * 60)) == 1


def test_filters_combine(filled: Ledger) -> None:
    f = ChargeFilter(
        text="order-01",
        statuses=frozenset({TransferStatus.CREATED}),
        since=T0 + 12 * 60,
    )
    assert ids(filled.charges_page(f, 0, 100)) == ["ch_016", "ch_015"]
    assert filled.count_charges(f) == 2


@pytest.mark.parametrize("batch", [1, 4, 23, 1000])
def test_iter_charges_is_oldest_first_over_any_batch_size(filled: Ledger, batch: int) -> None:
    assert ids(filled.iter_charges(EVERYTHING, batch=batch)) == [
        f"ch_{n:03d}" for n in range(1, 24)
    ]


def test_iter_charges_applies_the_filter(filled: Ledger) -> None:
    f = ChargeFilter(statuses=frozenset({TransferStatus.FAILED}))
    assert ids(filled.iter_charges(f, batch=2)) == ["ch_003", "ch_008", "ch_013", "ch_018"]
    assert list(filled.iter_charges(ChargeFilter(text="zzz"))) == []


def test_iter_charges_matches_the_pages(filled: Ledger) -> None:
    assert list(filled.iter_charges(EVERYTHING)) == filled.charges_page(EVERYTHING, 0, 100)[::-1]


def test_iter_charge_rows_are_the_views_fields(filled: Ledger) -> None:
    rows = list(filled.iter_charge_rows(EVERYTHING, batch=5))
    views = list(filled.iter_charges(EVERYTHING))
    assert [r[0] for r in rows] == [v.seq for v in views]
    assert [r[1] for r in rows] == ids(views)
    assert rows[2][15] == "failed"  # ch_003
    assert rows[3][15] is None  # ch_004: no transfer row


def test_totals_per_currency(filled: Ledger) -> None:
    totals = {t.currency: t for t in filled.totals(EVERYTHING)}
    assert set(totals) == {"jpy", "usd"}
    usd = totals["usd"]
    # 21 usd charges: 4 without transfer (no split); 9 created, 4 pending, 4 failed.
    assert usd == Totals(
        currency="usd",
        count=21,
        gross=210000,
        stripe_fee=17 * 320,
        commission=17 * 97,
        transferred=9 * 9583,
        refunded=0,
    )
    jpy = totals["jpy"]
    # 1000 jpy -> fee 29, commission 10, transfer 961; the other has no split.
    assert (jpy.count, jpy.gross, jpy.stripe_fee, jpy.commission) == (2, 3000, 29, 10)
    assert (jpy.transferred, jpy.refunded) == (961, 2000)


def test_totals_follow_the_filter(filled: Ledger) -> None:
    f = ChargeFilter(statuses=frozenset({TransferStatus.FAILED}))
    (usd,) = filled.totals(f)
    assert (usd.count, usd.gross, usd.transferred) == (4, 40000, 0)
    assert filled.totals(ChargeFilter(text="zzz")) == []


def test_an_empty_ledger(ledger: Ledger) -> None:
    assert ledger.count_charges(EVERYTHING) == 0
    assert ledger.charges_page(EVERYTHING, 0, 10) == []
    assert list(ledger.iter_charges(EVERYTHING)) == []
    assert ledger.totals(EVERYTHING) == []
    counts = ledger.counts()
    assert (counts.charges, counts.pending_transfers, counts.pending_events) == (0, 0, 0)


def test_make_ledger_builds_a_real_ledger_with_consistent_splits(tmp_path: Path) -> None:
    path = make_ledger(tmp_path / "gen.sqlite3", 3000, seed=7)
    with Ledger.open(f"sqlite:///{path}") as led:
        assert led.count_charges(EVERYTHING) == 3000
        views = list(led.iter_charges(EVERYTHING))
        assert [v.seq for v in views] == list(range(1, 3001))
        statuses = {v.transfer_status for v in views}
        assert {TransferStatus.NONE, TransferStatus.CREATED, TransferStatus.FAILED} <= statuses
        jpy = FeeSchedule(fixed_fee_by_currency={"jpy": 0})
        for v in views:
            if v.stripe_fee is None:
                continue
            assert v.commission is not None
            assert v.transfer_amount is not None
            assert v.stripe_fee + v.commission + v.transfer_amount == v.gross
            if v.fee_source is FeeSource.ESTIMATE:  # the generator's maths is fees.split's
                expected = split(v.gross, v.currency, jpy if v.currency == "jpy" else FeeSchedule())
                assert (v.stripe_fee, v.commission) == (expected.stripe_fee, expected.commission)
        created = [v.created for v in views]
        assert created == sorted(created)
        assert len(led.due_transfers(now=1e12, limit=10_000)) == sum(
            v.transfer_status is TransferStatus.PENDING for v in views
        )
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
