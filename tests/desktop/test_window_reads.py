"""The window reads the ledger off the GUI thread (detail pane, table, polls); changes throttled."""

from __future__ import annotations

import dataclasses
import gc
import time
import weakref

import pytest
from PySide6.QtCore import QThread
from PySide6.QtWidgets import QApplication
from snapshots import charge_snapshot

from gateway.config import Settings
from gateway.models import ChargeSnapshot, TimelineKind
from ursus_desktop.controller import CHANGED_MS, GatewayController
from ursus_desktop.payments_model import CHARGE_ROLE

pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")


def snapshot(charge_id: str) -> ChargeSnapshot:
    return charge_snapshot(charge_id, amount=2500, created=int(time.time()))


def test_the_detail_pane_and_the_table_read_off_the_gui_thread(qtbot, window, monkeypatch):  # type: ignore[no-untyped-def]
    ledger = window.controller.ledger
    calls: list[tuple[str, bool]] = []
    gui = QApplication.instance().thread()  # type: ignore[union-attr]
    for name in ("get_charge", "timeline", "charges_page", "count_charges", "data_version"):
        method = getattr(ledger, name)

        def wrapped(*args, _name=name, _method=method, **kwargs):  # type: ignore[no-untyped-def]
            calls.append((_name, QThread.currentThread() is gui))  # ran on the GUI thread?
            return _method(*args, **kwargs)

        monkeypatch.setattr(ledger, name, wrapped)
    calls.clear()

    ledger.upsert_charge(snapshot("ch_test_detail_1"))
    ledger.add_timeline("ch_test_detail_1", TimelineKind.EVENT, "charge.succeeded received")
    model = window.model
    qtbot.waitUntil(lambda: model.rowCount() == 1, timeout=5000)  # ledger_changed -> count
    qtbot.waitUntil(lambda: model.data(model.index(0, 0), CHARGE_ROLE) is not None, timeout=5000)
    window.table.selectRow(0)
    assert window.detail.charge is not None
    assert window.detail.charge.charge_id == "ch_test_detail_1"  # at once, from the row
    qtbot.waitUntil(lambda: window.detail.timeline.count() == 1, timeout=5000)
    assert "charge.succeeded received" in window.detail.timeline.item(0).text()

    names = {name for name, _ in calls}
    assert {"get_charge", "timeline", "charges_page", "count_charges"} <= names
    assert [name for name, on_gui in calls if on_gui] == []


def test_ledger_changes_are_told_at_once_then_at_most_every_interval(qtbot, controller) -> None:
    with qtbot.waitSignal(controller.ledger_opened, timeout=5000):
        controller.open_ledger()
    told: list[float] = []
    controller.ledger_changed.connect(lambda: told.append(time.monotonic()))
    for _ in range(20):  # a burst of commits, as the gateway's threads make them
        controller._emit_ledger_changed()
    assert len(told) == 1  # the first at once
    qtbot.waitUntil(lambda: len(told) == 2, timeout=5 * CHANGED_MS)  # the rest, once
    assert told[1] - told[0] >= CHANGED_MS / 1000 * 0.9
    qtbot.wait(2 * CHANGED_MS)
    assert len(told) == 2  # nothing pending: quiet
    controller._emit_ledger_changed()
    qtbot.waitUntil(lambda: len(told) == 3, timeout=5 * CHANGED_MS)


def test_a_running_gateway_is_kept_out_of_full_collections_until_it_stops(
    qtbot, controller: GatewayController
) -> None:
    controller.settings = dataclasses.replace(Settings(), port=0)
    controller.sandbox = True
    frozen_before = gc.get_freeze_count()
    with qtbot.waitSignal(controller.running_changed, timeout=15_000):
        controller.start()
    server = controller.server
    assert server is not None
    assert gc.get_freeze_count() > frozen_before  # the gateway's objects among them
    gone = weakref.ref(server)
    del server
    with qtbot.waitSignal(controller.running_changed, timeout=15_000):
        controller.stop()
    gc.collect()
    assert gone() is None  # not frozen for good: a stopped gateway is collected
