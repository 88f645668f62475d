"""Detail pane: one charge's ids, split, errors and event timeline, with its actions."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from gateway.models import ChargeView, TimelineEntry, TransferStatus
from ursus_desktop import resources
from ursus_desktop.payments_model import STATUS_TEXT, fee_text, local_time, money


class DetailPane(QWidget):
    """Shows what ``show_charge`` was given; asks for a retry through ``retry_requested``."""

    retry_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.charge: ChargeView | None = None
        self.title = QLabel("Select a payment")
        self.title.setStyleSheet("font-weight: bold;")
        self.fields: dict[str, QLabel] = {}
        form = QFormLayout()
        for name in (
            "Charge",
            "Payment intent",
            "Order",
            "Created",
            "Gross",
            "Stripe fee",
            "Commission",
            "Vendor transfer",
            "Transfer",
            "Transfer id",
            "Refunded",
            "Error",
        ):
            label = QLabel()
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setWordWrap(True)
            self.fields[name] = label
            form.addRow(name, label)
        self.timeline = QListWidget()
        self.retry_button = QPushButton(
            QIcon(str(resources.path("icons/retry.svg"))), "Retry transfer"
        )
        self.retry_button.setToolTip("Queue the failed transfer again (Ctrl+R)")
        self.retry_button.clicked.connect(self.on_retry_clicked)
        self.copy_button = QPushButton(QIcon(str(resources.path("icons/copy.svg"))), "Copy id")
        self.copy_button.setToolTip("Copy the charge id (Ctrl+Shift+C)")
        self.copy_button.clicked.connect(self.on_copy_clicked)
        buttons = QHBoxLayout()
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.copy_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(QLabel("Timeline"))
        layout.addWidget(self.timeline, 1)
        self.show_charge(None, [])

    def show_charge(self, view: ChargeView | None, timeline: list[TimelineEntry]) -> None:
        self.charge = view
        self.timeline.clear()
        if view is None:
            self.title.setText("Select a payment")
            for label in self.fields.values():
                label.clear()
            self.retry_button.setEnabled(False)
            self.copy_button.setEnabled(False)
            return
        self.title.setText(f"Payment {view.order_id or view.charge_id}")
        values = {
            "Charge": view.charge_id,
            "Payment intent": view.payment_intent_id,
            "Order": view.order_id,
            "Created": local_time(view.created),
            "Gross": money(view.gross, view.currency),
            "Stripe fee": fee_text(view),
            "Commission": money(view.commission, view.currency),
            "Vendor transfer": money(view.transfer_amount, view.currency),
            "Transfer": STATUS_TEXT.get(view.transfer_status, str(view.transfer_status)),
            "Transfer id": view.transfer_id,
            "Refunded": money(view.amount_refunded, view.currency) if view.amount_refunded else "",
            "Error": f"{view.error_code}: {view.error_message}"
            if view.error_code
            else view.error_message,
        }
        for name, value in values.items():
            self.fields[name].setText(value)
        for entry in timeline:
            self.timeline.addItem(f"{local_time(int(entry.at))}  {entry.kind}  {entry.detail}")
        self.retry_button.setEnabled(view.transfer_status is TransferStatus.FAILED)
        self.copy_button.setEnabled(True)

    @Slot()
    def on_retry_clicked(self) -> None:
        if self.charge is not None and self.charge.transfer_status is TransferStatus.FAILED:
            self.retry_button.setEnabled(False)  # until the ledger says what happened
            self.retry_requested.emit(self.charge.charge_id)

    @Slot()
    def on_copy_clicked(self) -> None:
        if self.charge is not None:
            QGuiApplication.clipboard().setText(self.charge.charge_id)
