"""The payments model without a view: lazy paging, counts, filters, roles, ordering."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PySide6.QtCore import QEventLoop, Qt, QTimer
from snapshots import charge_snapshot

from bench.make_ledger import make_ledger
from gateway.ledger import Ledger
from gateway.models import ChargeFilter, ChargeSnapshot, ChargeView, TransferStatus
from ursus_desktop.payments_model import (
    CHARGE_ROLE,
    HEADERS,
    MAX_PAGES,
    PAGE_SIZE,
    SORT_ROLE,
    ChargesModel,
    ChargesProxy,
    Column,
)

ROWS = 100_000


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("big") / "ledger.sqlite3"
    make_ledger(path, ROWS, seed=0)
    ledger = Ledger.open(f"sqlite:///{path}")
    yield ledger
    ledger.close()


@pytest.fixture
def model(qtbot):  # type: ignore[no-untyped-def]
    charges = ChargesModel()
    yield charges
    # Reads still running must end before their ledger is closed.
    assert charges._reader.wait_idle(10_000)


def settled(qtbot, model: ChargesModel, change) -> None:  # type: ignore[no-untyped-def]
    """Apply a ledger/filter change and wait for its row count (read off the GUI thread)."""
    with qtbot.waitSignal(model.counted, timeout=10_000):
        change()


def view(model: ChargesModel, row: int) -> ChargeView:
    """The row's charge; its page is read off the GUI thread, so wait for it."""
    deadline = time.monotonic() + 10
    while (result := model.data(model.index(row, 0), CHARGE_ROLE)) is None:
        assert time.monotonic() < deadline, f"row {row} was never read"
        # The page arrives as a queued signal. QEventLoop.exec() lets go of the GIL while
        # it waits; QTest.qWait() would keep it and starve the reading thread.
        loop = QEventLoop()
        QTimer.singleShot(2, loop.quit)
        loop.exec()
    assert isinstance(result, ChargeView)
    return result


def test_a_100k_ledger_opens_with_one_count_and_no_rows_read(qtbot, model, big_ledger) -> None:
    model.set_ledger(big_ledger)
    assert model.rowCount() == 0  # nothing read on the GUI thread yet
    with qtbot.waitSignal(model.counted, timeout=10_000):
        pass
    first = view(model, 0).charge_id
    assert model.data(model.index(0, Column.CHARGE)) == first
    assert model.rowCount() == ROWS
    assert model.columnCount() == len(Column)
    assert first
    assert model.page_loads == 1


def test_rows_are_newest_first_and_pages_are_cached(qtbot, model, big_ledger) -> None:
    settled(qtbot, model, lambda: model.set_ledger(big_ledger))
    seqs = [view(model, row).seq for row in range(0, 3 * PAGE_SIZE, 37)]
    assert seqs == sorted(seqs, reverse=True)
    loads = model.page_loads
    view(model, 5)
    assert model.page_loads == loads  # page 0 again: from the cache
    last = view(model, ROWS - 1)
    assert last.seq == min(v.seq for v in big_ledger.charges_page(ChargeFilter(), ROWS - 1, 1))
    assert model.page_loads == loads + 1


def test_the_page_cache_is_bounded(qtbot, model, big_ledger) -> None:
    settled(qtbot, model, lambda: model.set_ledger(big_ledger))
    for page in range(MAX_PAGES + 10):
        view(model, page * PAGE_SIZE)
    assert len(model._pages) == MAX_PAGES


def test_status_and_text_filters_go_to_sql(qtbot, model, big_ledger) -> None:
    settled(qtbot, model, lambda: model.set_ledger(big_ledger))
    failed = ChargeFilter(statuses=frozenset({TransferStatus.FAILED}))
    settled(qtbot, model, lambda: model.set_filter(failed))
    assert 0 < model.rowCount() < ROWS
    assert model.rowCount() == big_ledger.count_charges(failed)
    assert {view(model, r).transfer_status for r in range(min(50, model.rowCount()))} == {
        TransferStatus.FAILED
    }
    order_id = view(model, 0).order_id
    settled(qtbot, model, lambda: model.set_filter(ChargeFilter(text=order_id)))
    qtbot.waitUntil(lambda: sum(t.count for t in model.totals) == model.rowCount())
    assert model.rowCount() >= 1
    assert order_id in view(model, 0).order_id
    assert sum(t.count for t in model.totals) == model.rowCount()


def test_roles_give_raw_values_for_sorting_and_text_for_display(qtbot, model, big_ledger) -> None:
    settled(qtbot, model, lambda: model.set_ledger(big_ledger))
    row = next(r for r in range(500) if view(model, r).currency == "usd")
    v = view(model, row)
    gross = model.index(row, Column.GROSS)
    assert model.data(gross, SORT_ROLE) == v.gross
    assert model.data(gross) == f"{v.gross // 100}.{v.gross % 100:02d} USD"
    assert model.data(model.index(row, Column.TIME), SORT_ROLE) == v.created
    assert model.data(model.index(row, Column.STATUS), SORT_ROLE) == str(v.transfer_status)
    assert model.headerData(Column.FEE, Qt.Orientation.Horizontal) == HEADERS[Column.FEE]
    fee = model.data(model.index(row, Column.FEE))
    assert fee == "—" or "USD" in fee


def test_the_proxy_sorts_by_time_in_sql_without_reading_everything(
    qtbot, model, big_ledger
) -> None:
    settled(qtbot, model, lambda: model.set_ledger(big_ledger))
    proxy = ChargesProxy()
    proxy.setSourceModel(model)
    newest = view(model, 0).seq
    proxy.sort(Column.TIME, Qt.SortOrder.AscendingOrder)
    oldest_first = view(model, 0)  # rows are read off the GUI thread: wait through the model
    assert proxy.data(proxy.index(0, 0), CHARGE_ROLE) == oldest_first
    assert oldest_first.seq < newest
    view(model, ROWS - 1)
    assert proxy.data(proxy.index(ROWS - 1, 0), CHARGE_ROLE).seq == newest
    proxy.sort(Column.GROSS, Qt.SortOrder.AscendingOrder)  # ignored: would need every row
    assert model.page_loads <= 4
    assert proxy.rowCount() == ROWS


def _snapshot(charge_id: str, created: int) -> ChargeSnapshot:
    return charge_snapshot(charge_id, created=created)


def test_refresh_inserts_new_rows_at_the_top(qtbot, model, tmp_path: Path) -> None:
    path = make_ledger(tmp_path / "small.sqlite3", 30, seed=1)
    ledger = Ledger.open(f"sqlite:///{path}")
    try:
        settled(qtbot, model, lambda: model.set_ledger(ledger))
        assert model.rowCount() == 30
        ledger.upsert_charge(_snapshot("ch_new_0001", int(time.time())))
        with qtbot.waitSignal(model.rowsInserted) as blocker:
            model.refresh()
        assert blocker.args[1:] == [0, 0]
        assert model.rowCount() == 31
        assert view(model, 0).charge_id == "ch_new_0001"
    finally:
        model._reader.wait_idle(10_000)
        ledger.close()


def test_a_count_read_for_an_older_filter_is_ignored(qtbot, model, big_ledger) -> None:
    settled(qtbot, model, lambda: model.set_ledger(big_ledger))
    failed = ChargeFilter(statuses=frozenset({TransferStatus.FAILED}))
    model.set_filter(failed)
    model.set_filter(ChargeFilter())  # supersedes the first before its count arrives
    qtbot.waitUntil(lambda: not model._reader.busy, timeout=10_000)
    assert model.rowCount() == ROWS
    assert sum(t.count for t in model.totals) == ROWS


def test_reads_on_qt_pool_threads_reuse_their_connections(qtbot, tmp_path: Path) -> None:
    """PySide6 gives each QRunnable a fresh Python thread state: no connection per read."""
    from ursus_desktop.reader import LedgerReader

    ledger = Ledger.open(f"sqlite:///{tmp_path}/reads.sqlite3")
    reader = LedgerReader()
    try:
        results: list[int] = []
        for i in range(60):
            reader.submit(f"lane-{i % 3}", lambda: ledger.count_charges(ChargeFilter()),
                          results.append)  # fmt: skip
            qtbot.waitUntil(lambda: not reader.busy, timeout=5000)
        assert results and set(results) == {0}
        assert ledger._conns is not None and ledger._conns.open_count <= 4  # pool + this one
    finally:
        assert reader.wait_idle(5000)
        ledger.close()
