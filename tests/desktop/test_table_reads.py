"""The payments table reads the ledger only off the GUI thread, and shows stale rows meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QModelRoleData, QModelRoleDataSpan, Qt, QThread
from PySide6.QtWidgets import QApplication, QTableView
from snapshots import charge_snapshot

from bench.make_ledger import make_ledger
from gateway.ledger import Ledger
from gateway.models import ChargeFilter, ChargeSnapshot, ChargeView, TransferStatus
from ursus_desktop.payments_model import (
    CHARGE_ROLE,
    PAGE_SIZE,
    SORT_ROLE,
    ChargesModel,
    ChargesProxy,
    Column,
    money,
)

ROWS = 450  # three pages of rows


class Recorded:
    """Wraps a ledger's read methods: which threads called them, and a gate to hold reads."""

    def __init__(self, ledger: Ledger, names: tuple[str, ...] = ("charges_page",)) -> None:
        self.threads: list[tuple[str, bool]] = []  # method, ran on the GUI thread
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()  # a read is held at the gate
        for name in names:
            setattr(ledger, name, self._wrap(name, getattr(ledger, name)))

    def _wrap(self, name, method):  # type: ignore[no-untyped-def]
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            gui = QApplication.instance().thread()  # type: ignore[union-attr]
            self.threads.append((name, QThread.currentThread() is gui))
            if not self.gate.is_set():
                self.waiting.set()
                assert self.gate.wait(10), "the test never opened the gate"
            return method(*args, **kwargs)

        return wrapped

    def on_gui_thread(self) -> list[str]:
        return [name for name, gui in self.threads if gui]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    path = make_ledger(tmp_path / "ledger.sqlite3", ROWS, seed=3)
    opened = Ledger.open(f"sqlite:///{path}")
    yield opened
    opened.close()


@pytest.fixture
def table(qtbot, ledger: Ledger):  # type: ignore[no-untyped-def]
    """A shown table view over the model (through the proxy, as in the window)."""
    model = ChargesModel()
    proxy = ChargesProxy()
    proxy.setSourceModel(model)
    view = QTableView()
    view.setModel(proxy)
    view.resize(900, 400)
    qtbot.addWidget(view)
    view.show()
    yield model, view
    assert model._reader.wait_idle(10_000)  # reads end before the ledger closes


def shown(model: ChargesModel, row: int) -> ChargeView | None:
    return model.data(model.index(row, 0), CHARGE_ROLE)


def open_table(qtbot, model: ChargesModel, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    with qtbot.waitSignal(model.counted, timeout=10_000):
        model.set_ledger(ledger)
    assert shown(model, 0) is not None  # the first rows come with the first count


def snapshot(charge_id: str, created: int) -> ChargeSnapshot:
    return charge_snapshot(charge_id, created=created)


def test_painting_reads_pages_off_the_gui_thread_only(qtbot, table, ledger: Ledger) -> None:
    model, view = table
    recorded = Recorded(ledger, ("charges_page", "count_charges", "totals"))
    open_table(qtbot, model, ledger)
    view.viewport().repaint()
    newest = ledger.charges_page(ChargeFilter(), 0, 1)[0]  # the test's own read
    recorded.threads.pop()
    assert shown(model, 0) == newest
    assert model.data(model.index(0, Column.CHARGE)) == newest.charge_id
    view.scrollToBottom()
    view.viewport().repaint()  # asks for the rows now in view
    qtbot.waitUntil(lambda: shown(model, ROWS - 1) is not None, timeout=10_000)
    assert {name for name, _gui in recorded.threads} == {"charges_page", "count_charges", "totals"}
    assert recorded.on_gui_thread() == []


def test_rows_shown_come_fresh_with_the_count_in_one_step(qtbot, table, ledger: Ledger) -> None:
    model, view = table
    open_table(qtbot, model, ledger)
    view.viewport().repaint()  # the view looks at the top rows
    top = shown(model, 0)
    assert top is not None
    recorded = Recorded(ledger)
    ledger.upsert_charge(snapshot("ch_test_new_0001", int(time.time())))
    ledger.record_refund(top.charge_id, "re_test_0001", 500, int(time.time()))
    with qtbot.waitSignal(model.counted, timeout=10_000):
        model.refresh()
    # Inserted and read in one step: the new row and the refunded one, no blank between.
    fresh_top = shown(model, 0)
    assert fresh_top is not None and fresh_top.charge_id == "ch_test_new_0001"
    refunded = shown(model, 1)
    assert refunded is not None and refunded.charge_id == top.charge_id
    assert refunded.amount_refunded == 500
    assert model.data(model.index(1, Column.REFUNDED)) == money(500, top.currency)
    assert recorded.threads and recorded.on_gui_thread() == []


def test_rows_not_shown_stay_in_place_until_their_fresh_page_arrives(
    qtbot, table, ledger: Ledger
) -> None:
    model, view = table
    open_table(qtbot, model, ledger)
    shown(model, ROWS - 1)  # asks for the oldest rows; they arrive off the GUI thread
    qtbot.waitUntil(lambda: shown(model, ROWS - 1) is not None, timeout=10_000)
    oldest = shown(model, ROWS - 1)
    assert oldest is not None
    with qtbot.waitSignal(model.counted, timeout=10_000):
        model.refresh()  # no change: from now on the view alone looks at rows
    view.viewport().repaint()  # it shows the top rows only
    recorded = Recorded(ledger)
    ledger.upsert_charge(snapshot("ch_test_new_0002", int(time.time())))
    ledger.record_refund(oldest.charge_id, "re_test_0002", 500, int(time.time()))
    with qtbot.waitSignal(model.counted, timeout=10_000):
        model.refresh()  # reads the count and the rows shown, not the oldest ones
    assert model.rowCount() == ROWS + 1

    recorded.gate.clear()
    # Stale rows beat blank rows: the oldest charge moved down one row, as read before.
    assert shown(model, ROWS) == oldest
    assert recorded.waiting.wait(10)  # ... and its page is being read again
    with qtbot.waitSignal(model.dataChanged, timeout=10_000) as changed:
        recorded.gate.set()
    # Just that page's rows that changed: the refunded one, and one of the next page
    # that was blank (never read) and arrived with it.
    assert changed.args[1].row() == ROWS
    assert changed.args[0].row() >= ROWS - PAGE_SIZE
    assert shown(model, ROWS).amount_refunded == 500  # type: ignore[union-attr]
    assert recorded.on_gui_thread() == []


def test_a_filter_change_never_shows_rows_of_the_old_filter(qtbot, table, ledger: Ledger) -> None:
    model, view = table
    open_table(qtbot, model, ledger)
    failed = ChargeFilter(statuses=frozenset({TransferStatus.FAILED}))
    pending = ChargeFilter(statuses=frozenset({TransferStatus.PENDING}))
    assert ledger.count_charges(failed) and ledger.count_charges(pending)
    recorded = Recorded(ledger)
    recorded.gate.clear()
    seen: list[TransferStatus] = []

    def look() -> None:  # whenever rows arrive or change, what does the table show?
        rows = (shown(model, row) for row in range(min(model.rowCount(), 30)))
        seen.extend(v.transfer_status for v in rows if v is not None)

    for signal in (model.counted, model.page_loaded, model.dataChanged):
        signal.connect(look)
    model.set_filter(failed)
    assert model.rowCount() == 0  # rows of the old filter are not kept as stale rows
    assert recorded.waiting.wait(10)  # the FAILED rows are being read, held at the gate
    model.set_filter(pending)  # meanwhile: the FAILED rows must never be shown
    with qtbot.waitSignal(model.counted, timeout=10_000):
        recorded.gate.set()
    assert model._reader.wait_idle(10_000)
    QApplication.processEvents()  # any late result is applied (or dropped) by now
    view.viewport().repaint()
    qtbot.waitUntil(lambda: shown(model, model.rowCount() - 1) is not None, timeout=10_000)
    look()
    assert model.rowCount() == ledger.count_charges(pending)
    assert seen and set(seen) == {TransferStatus.PENDING}
    assert len(recorded.threads) >= 2 and recorded.on_gui_thread() == []
    for signal in (model.counted, model.page_loaded, model.dataChanged):
        signal.disconnect(look)


def test_multidata_fills_every_role_as_data_does(qtbot, table, ledger: Ledger) -> None:
    model, view = table
    open_table(qtbot, model, ledger)
    proxy = view.model()
    roles = [
        Qt.ItemDataRole.DisplayRole,
        Qt.ItemDataRole.TextAlignmentRole,
        Qt.ItemDataRole.ForegroundRole,
        Qt.ItemDataRole.FontRole,
        SORT_ROLE,
    ]
    for column in (Column.GROSS, Column.STATUS, Column.ORDER):
        for role in roles:
            cell = QModelRoleData(role)
            proxy.multiData(proxy.index(0, column), QModelRoleDataSpan(cell))
            assert cell.data() == model.data(model.index(0, column), role), (column, role)
    top = shown(model, 0)
    assert top is not None
    assert model.data(model.index(0, Column.GROSS)).endswith(top.currency.upper())
    empty = QModelRoleData(Qt.ItemDataRole.DisplayRole)
    model.multiData(model.index(ROWS + 5, 0), QModelRoleDataSpan(empty))  # no such row
    assert empty.data() is None


def test_sorting_by_time_keeps_the_rows_already_read(qtbot, table, ledger: Ledger) -> None:
    model, view = table
    open_table(qtbot, model, ledger)
    newest = shown(model, 0)
    loads = model.page_loads
    model.sort(Column.TIME, Qt.SortOrder.AscendingOrder)
    assert shown(model, ROWS - 1) == newest  # from the cache, re-read in the background
    assert model.page_loads == loads
    view.viewport().repaint()
    qtbot.waitUntil(lambda: shown(model, 0) is not None, timeout=10_000)
    assert shown(model, 0).seq < newest.seq  # type: ignore[union-attr]
