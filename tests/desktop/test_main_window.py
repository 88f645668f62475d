"""Main window flows against a running sandbox gateway."""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from pathlib import Path

import pytest
import requests
import stripe

from gateway.config import Settings
from gateway.models import ChargeFilter, TransferStatus
from ursus_desktop.controller import GatewayController
from ursus_desktop.main_window import MainWindow
from ursus_desktop.payments_model import CHARGE_ROLE, Column

# The offscreen platform warns when a message box is shown; harmless there.
pytestmark = pytest.mark.qt_log_ignore("propagateSizeHints")


def start(qtbot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.controller.running_changed, timeout=10000):
        window.start_action.trigger()
    assert window.controller.is_running


def simulate(qtbot, window: MainWindow, amount: int = 10000) -> str:
    c = window.controller
    with qtbot.waitSignal(c.payment_simulated, timeout=15000) as sale:
        c.simulate_payment(amount, "usd")
    charge_id = sale.args[0]
    c.server.wait_for_transfer(charge_id, timeout=10)
    return charge_id


def row_of(window: MainWindow, charge_id: str) -> int | None:
    """The row showing the charge; rows arrive off the GUI thread (None until read)."""
    for row in range(window.model.rowCount()):
        view = window.model.data(window.model.index(row, 0), CHARGE_ROLE)
        if view is not None and view.charge_id == charge_id:
            return row
    return None


def test_sandbox_sale_appears_with_the_seed_split(qtbot, window: MainWindow) -> None:
    start(qtbot, window)
    assert window.simulate_action.isEnabled()
    charge_id = simulate(qtbot, window)
    qtbot.waitUntil(
        lambda: (
            row_of(window, charge_id) is not None
            and window.model.charge_at(row_of(window, charge_id)).transfer_status
            is TransferStatus.CREATED
        ),
        timeout=5000,
    )
    v = window.model.charge_at(row_of(window, charge_id))
    assert (v.gross, v.stripe_fee, v.commission, v.transfer_amount) == (10000, 320, 97, 9583)
    assert window.model.data(window.model.index(0, Column.TRANSFER)) == "95.83 USD"
    # The totals are a read of their own, which may come after the rows.
    qtbot.waitUntil(lambda: "transferred 95.83 USD" in window.totals_label.text(), timeout=3000)
    assert "SANDBOX" in window.windowTitle()


def test_a_signed_event_posted_to_the_gateway_shows_up_within_a_second(qtbot, window) -> None:
    start(qtbot, window)
    server = window.controller.server
    sandbox = server.sandbox
    sandbox.webhook_url = None  # we deliver the event ourselves
    pi = sandbox.state.create_payment_intent({"amount": "4200", "currency": "usd"})
    charge_id = sandbox.state.confirm_payment_intent(pi["id"], {"payment_method": "pm_card_visa"})[
        "latest_charge"
    ]
    body = json.dumps(
        {
            "id": "evt_test_desktop_1",
            "object": "event",
            "type": "charge.succeeded",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": {"id": charge_id, "object": "charge"}},
        }
    )
    header = stripe.WebhookSignature.generate_signature_header(body, sandbox.webhook_secret)
    response = requests.post(
        server.webhook_url,
        data=body.encode(),
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200
    started = time.monotonic()
    qtbot.waitUntil(lambda: row_of(window, charge_id) is not None, timeout=3000)
    assert time.monotonic() - started < 1.5
    window.table.selectRow(row_of(window, charge_id))
    assert window.detail.charge.charge_id == charge_id
    qtbot.waitUntil(lambda: window.detail.timeline.count() >= 1, timeout=3000)  # read by id


def test_export_writes_the_file(qtbot, window: MainWindow, tmp_path: Path) -> None:
    start(qtbot, window)
    charge_id = simulate(qtbot, window)
    target = tmp_path / "out.csv"
    with qtbot.waitSignal(window.controller.export_finished, timeout=10000) as done:
        window.start_export(target, ChargeFilter())
    assert done.args == [1, str(target)]
    text = target.read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines()))
    assert len(rows) == 2
    assert charge_id in text
    assert "out.csv" in window.last_message[1]
    assert not list(tmp_path.glob(".ursus-export-*"))  # no temp file left


def status(ledger, charge_id: str) -> TransferStatus | None:  # type: ignore[no-untyped-def]
    view = ledger.get_charge(charge_id)
    return None if view is None else view.transfer_status


def attempts(ledger, charge_id: str) -> int:  # type: ignore[no-untyped-def]
    due = ledger.due_transfers(time.time() + 10**6, 100)
    return next((d.attempts for d in due if d.charge_id == charge_id), 0)


def test_retry_button_requeues_a_failed_transfer(qtbot, window: MainWindow) -> None:
    start(qtbot, window)
    c = window.controller
    sandbox = c.server.sandbox
    sandbox.faults.add("/v1/transfers", error_500=1.0)  # the transfer stays pending
    with qtbot.waitSignal(c.payment_simulated, timeout=15000) as sale:
        c.simulate_payment(10000, "usd")
    charge_id = sale.args[0]
    ledger = c.ledger
    # Wait until the first attempt is over and deferred (not in flight at Stripe), so the
    # failure set below cannot race a retry that the cleared faults would let through.
    qtbot.waitUntil(lambda: attempts(ledger, charge_id) >= 1, timeout=10000)
    ledger.transfer_failed(charge_id, "account_invalid", "The destination was closed")
    sandbox.faults.clear()
    qtbot.waitUntil(lambda: row_of(window, charge_id) is not None, timeout=3000)
    window.table.selectRow(row_of(window, charge_id))
    qtbot.waitUntil(lambda: window.detail.retry_button.isEnabled(), timeout=3000)
    assert "account_invalid" in window.detail.fields["Error"].text()
    with qtbot.waitSignal(c.transfer_retried, timeout=10000) as retried:
        window.detail.retry_button.click()
    assert retried.args == [charge_id, True]
    qtbot.waitUntil(lambda: status(ledger, charge_id) is TransferStatus.CREATED, timeout=10000)


def test_filters_narrow_the_table(qtbot, window: MainWindow) -> None:
    start(qtbot, window)
    first = simulate(qtbot, window, 10000)
    simulate(qtbot, window, 2500)
    qtbot.waitUntil(lambda: window.model.rowCount() == 2, timeout=3000)
    qtbot.waitUntil(lambda: row_of(window, first) is not None, timeout=3000)  # rows read
    order = window.model.charge_at(row_of(window, first)).order_id
    window.filter_text.setText(order)
    qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=3000)
    window.filter_text.clear()
    window.filter_status.setCurrentIndex(window.filter_status.findData("failed"))
    qtbot.waitUntil(lambda: window.model.rowCount() == 0, timeout=3000)
    assert window.totals_label.text() == "No payments match."


def test_layout_is_remembered_and_close_asks_while_running(qtbot, window, monkeypatch) -> None:
    window.resize(700, 500)
    window.table.horizontalHeader().resizeSection(Column.ORDER, 222)
    start(qtbot, window)
    asked: list[str] = []

    def ask(title: str, text: str, buttons: list[str]) -> str:
        asked.append(title)
        return ""  # cancel

    monkeypatch.setattr(window, "ask", ask)
    assert not window.close()
    assert asked and window.controller.is_running
    monkeypatch.setattr(window, "ask", lambda *a: "Stop and quit")
    assert window.close()
    assert not window.controller.is_running
    again = MainWindow(window.controller, tray=False, first_run_prompt=False)
    qtbot.addWidget(again)
    assert again.table.horizontalHeader().sectionSize(Column.ORDER) == 222
    assert again.size().width() == 700
    for secret in window.controller.secrets.values:
        assert secret not in again.windowTitle()


def test_first_run_without_keys_offers_sandbox_and_shows_a_sale(
    qtbot, controller: GatewayController, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zero configuration: 'Use Sandbox' starts the gateway and sends one $100 sale."""
    controller.settings = dataclasses.replace(Settings(), port=0)
    asked: list[str] = []

    def answer(_self: MainWindow, title: str, _text: str, buttons: list[str]) -> str:
        asked.append(title)
        return "Use Sandbox"

    monkeypatch.setattr(MainWindow, "ask", answer)
    w = MainWindow(controller, tray=False, first_run_prompt=True)
    try:
        controller.open_ledger()
        controller.load_secrets()  # the empty keyring: no keys yet
        qtbot.waitUntil(lambda: controller.is_running, timeout=10000)
        assert asked == ["Welcome to URSUS"]
        assert controller.sandbox and "SANDBOX" in w.windowTitle()
        qtbot.waitUntil(
            lambda: (
                w.model.rowCount() == 1
                and (row := w.model.charge_at(0)) is not None
                and row.transfer_status is TransferStatus.CREATED
            ),
            timeout=15000,
        )
        assert w.model.charge_at(0).transfer_amount == 9583
    finally:
        controller.shutdown()
        w.close()
        w.deleteLater()
