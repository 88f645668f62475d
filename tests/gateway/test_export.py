"""CSV export: columns, amounts per currency, RFC 4180 quoting, formula safety, streaming."""

from __future__ import annotations

import calendar
import csv
import io
import tracemalloc
from pathlib import Path

import pytest
from snapshots import charge_snapshot

from bench.make_ledger import make_ledger
from gateway.export import COLUMNS, ExportCancelled, export_csv, safe_cell
from gateway.fees import FeeSchedule, split
from gateway.ledger import Ledger
from gateway.models import ChargeFilter, ChargeSnapshot, TransferStatus

ACCOUNT = "acct_test1234567"
NOON = calendar.timegm((2026, 11, 26, 12, 0, 0))


def snapshot(charge_id: str, **changes: object) -> ChargeSnapshot:
    return charge_snapshot(charge_id, **{"created": NOON, "transfer_group": "", **changes})


def add(ledger: Ledger, snap: ChargeSnapshot, transfer_id: str | None = "tr_1") -> None:
    """A charge, its split and (with ``transfer_id``) a created transfer."""
    ledger.upsert_charge(snap)
    if transfer_id is None:
        return
    schedule = FeeSchedule(fixed_fee_by_currency={"jpy": 0})
    fee_split = split(snap.amount, snap.currency, schedule, snap.actual_fee)
    ledger.create_transfer(snap.charge_id, fee_split, ACCOUNT, "k-" + snap.charge_id)
    if transfer_id:
        ledger.transfer_created(snap.charge_id, transfer_id)


def export_text(ledger: Ledger, **kwargs: object) -> str:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    export_csv(ledger, out, **kwargs)  # type: ignore[arg-type]
    out.flush()
    data = raw.getvalue()
    assert not data.startswith(b"\xef\xbb\xbf")  # UTF-8 without BOM
    return data.decode("utf-8")


def export_rows(ledger: Ledger, **kwargs: object) -> list[dict[str, str]]:
    text = export_text(ledger, **kwargs)
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_header_row_and_column_order(ledger: Ledger) -> None:
    text = export_text(ledger)
    assert text == (
        "created_utc,charge_id,payment_intent_id,order_id,currency,gross,stripe_fee,"
        "fee_source,net,commission,transfer_amount,transfer_id,transfer_status,"
        "amount_refunded,livemode\r\n"
    )
    assert COLUMNS[0] == "created_utc"
    assert len(COLUMNS) == 15


def test_the_seed_sale_as_a_row(ledger: Ledger) -> None:
    add(ledger, snapshot("ch_1", amount_refunded=1250), transfer_id="tr_1")
    (row,) = export_rows(ledger)
    assert row == {
        "created_utc": "2026-11-26T12:00:00Z",
        "charge_id": "ch_1",
        "payment_intent_id": "pi_1",
        "order_id": "order-1",
        "currency": "USD",
        "gross": "100.00",
        "stripe_fee": "3.20",
        "fee_source": "estimate",
        "net": "96.80",
        "commission": "0.97",
        "transfer_amount": "95.83",
        "transfer_id": "tr_1",
        "transfer_status": "created",
        "amount_refunded": "12.50",
        "livemode": "false",
    }


def test_zero_and_three_decimal_currencies(ledger: Ledger) -> None:
    add(ledger, snapshot("ch_jpy", currency="jpy", amount=1000, livemode=True))
    add(ledger, snapshot("ch_kwd", currency="kwd", amount=10000, actual_fee=400))
    jpy, kwd = export_rows(ledger)
    assert (jpy["currency"], jpy["gross"], jpy["stripe_fee"], jpy["net"]) == (
        "JPY",
        "1000",
        "29",
        "971",
    )
    assert (jpy["commission"], jpy["transfer_amount"], jpy["amount_refunded"]) == ("10", "961", "0")
    assert jpy["livemode"] == "true"
    assert (kwd["currency"], kwd["gross"], kwd["stripe_fee"], kwd["fee_source"]) == (
        "KWD",
        "10.000",
        "0.400",
        "actual",
    )
    assert (kwd["net"], kwd["commission"], kwd["transfer_amount"]) == ("9.600", "0.096", "9.504")


def test_unknown_values_are_empty_cells(ledger: Ledger) -> None:
    add(ledger, snapshot("ch_new"), transfer_id=None)  # no split, no transfer yet
    add(ledger, snapshot("ch_due", created=NOON + 1), transfer_id="")  # pending transfer
    new, due = export_rows(ledger)
    for name in ("stripe_fee", "fee_source", "net", "commission", "transfer_amount", "transfer_id"):
        assert new[name] == ""
    assert new["transfer_status"] == "none"
    assert new["gross"] == "100.00"
    assert (due["transfer_status"], due["transfer_id"], due["transfer_amount"]) == (
        "pending",
        "",
        "95.83",
    )


def test_rows_are_oldest_first_and_times_are_utc(ledger: Ledger) -> None:
    add(ledger, snapshot("ch_a", created=calendar.timegm((2025, 12, 31, 23, 59, 59))))
    add(ledger, snapshot("ch_b", created=calendar.timegm((2026, 1, 1, 0, 0, 0))))
    add(ledger, snapshot("ch_c", created=0))
    rows = export_rows(ledger)
    assert [(r["charge_id"], r["created_utc"]) for r in rows] == [
        ("ch_a", "2025-12-31T23:59:59Z"),
        ("ch_b", "2026-01-01T00:00:00Z"),
        ("ch_c", "1970-01-01T00:00:00Z"),
    ]


def test_rfc4180_quoting_and_crlf(ledger: Ledger) -> None:
    tricky = 'Bear, "Grizzly"\nline two'
    add(ledger, snapshot("ch_1", order_id=tricky))
    add(ledger, snapshot("ch_2", order_id="café ☕ 熊"))
    text = export_text(ledger)
    assert '"Bear, ""Grizzly""\nline two"' in text
    lines = text.split("\r\n")
    assert lines[-1] == ""  # ends with CRLF
    assert all("\r" not in line for line in lines)
    rows = export_rows(ledger)
    assert [r["order_id"] for r in rows] == [tricky, "café ☕ 熊"]


@pytest.mark.parametrize("danger", ["=1+1", "+1", "-1", "@SUM(A1:A2)", "\tx", "\rx"])
def test_formula_injection_is_neutralised(ledger: Ledger, danger: str) -> None:
    add(ledger, snapshot("ch_1", order_id=danger))
    (row,) = export_rows(ledger)
    assert row["order_id"] == "'" + danger


def test_harmless_text_is_left_alone() -> None:
    assert safe_cell("order-1") == "order-1"
    assert safe_cell("") == ""
    assert safe_cell("a=b") == "a=b"
    assert safe_cell("=cmd") == "'=cmd"


def test_the_filter_selects_rows(ledger: Ledger) -> None:
    add(ledger, snapshot("ch_1"))
    add(ledger, snapshot("ch_2"), transfer_id=None)
    add(ledger, snapshot("ch_3"))
    f = ChargeFilter(statuses=frozenset({TransferStatus.CREATED}))
    assert [r["charge_id"] for r in export_rows(ledger, filter=f)] == ["ch_1", "ch_3"]
    assert export_rows(ledger, filter=ChargeFilter(text="zzz")) == []


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10,000-charge ledger from the benchmark generator."""
    return make_ledger(tmp_path_factory.mktemp("gen") / "l.sqlite3", 10_000, seed=3)


def test_progress_every_thousand_rows_and_at_the_end(generated: Path) -> None:
    calls: list[int] = []

    def progress(done: int) -> bool:
        calls.append(done)
        return True

    f = ChargeFilter(until=calendar.timegm((2025, 1, 1, 0, 0, 0)) + 2500 * 30)
    with Ledger.open(f"sqlite:///{generated}") as led:
        expected = led.count_charges(f)
        written = export_csv(led, io.StringIO(newline=""), f, progress)
    assert written == expected
    assert 2000 < expected < 3000
    assert calls == [1000, 2000, expected]


def test_returning_false_cancels(generated: Path) -> None:
    calls: list[int] = []

    def progress(done: int) -> bool:
        calls.append(done)
        return done < 3000

    out = io.StringIO(newline="")
    with Ledger.open(f"sqlite:///{generated}") as led, pytest.raises(ExportCancelled):
        export_csv(led, out, progress=progress)
    assert calls == [1000, 2000, 3000]
    assert out.getvalue().count("\r\n") == 3001  # the header + what was written so far


def test_a_progress_callback_returning_none_does_not_cancel(generated: Path) -> None:
    with Ledger.open(f"sqlite:///{generated}") as led:
        assert export_csv(led, io.StringIO(newline=""), progress=lambda _done: None) == 10_000  # type: ignore[arg-type,return-value]


class CountingSink(io.TextIOBase):
    """A file that keeps nothing: measures the exporter's memory, not the output's."""

    def __init__(self) -> None:
        self.chars = 0
        self.lines = 0

    def write(self, s: str) -> int:
        self.chars += len(s)
        self.lines += s.count("\r\n")
        return len(s)


def test_a_10k_export_streams_in_constant_memory(generated: Path) -> None:
    start = calendar.timegm((2025, 1, 1, 0, 0, 0))
    peaks: dict[int, int] = {}
    with Ledger.open(f"sqlite:///{generated}") as led:
        for f in (ChargeFilter(until=start + 2000 * 30), ChargeFilter()):
            sink = CountingSink()
            tracemalloc.start()
            try:
                rows = export_csv(led, sink, f)  # type: ignore[arg-type]
                peaks[rows] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert sink.lines == rows + 1
    small, large = sorted(peaks)
    assert 1000 < small < 3000
    assert large == 10_000
    # 10k rows are ~1.3 MB of CSV; the exporter holds one 1000-row batch at a time, so
    # five times the rows must not take much more memory.
    assert peaks[large] < 2_000_000
    assert peaks[large] < peaks[small] * 1.5


def test_export_matches_the_ledger_views(generated: Path) -> None:
    with Ledger.open(f"sqlite:///{generated}") as led:
        views = list(led.iter_charges(ChargeFilter()))
        rows = export_rows(led)
    assert len(rows) == len(views) == 10_000
    for view, row in zip(views[::97], rows[::97], strict=True):
        assert row["charge_id"] == view.charge_id
        assert row["transfer_status"] == view.transfer_status.value
        assert row["currency"] == view.currency.upper()
        assert row["order_id"].lstrip("'") == view.order_id


def test_a_negative_amount_is_still_formatted_exactly(ledger: Ledger) -> None:
    # Never expected (fees and splits are clamped), but the fast path must not misprint:
    # divmod(-5, 100) is (-1, 95), which would read "-1.95".
    ledger.upsert_charge(snapshot("ch_1", amount=-5))
    ledger.upsert_charge(snapshot("ch_2", currency="jpy", amount=-5))
    usd, jpy = export_rows(ledger)
    assert (usd["gross"], usd["amount_refunded"]) == ("-0.05", "0.00")
    assert jpy["gross"] == "-5"
