"""Small dialogs: export range and path, simulated payment."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path

from PySide6.QtCore import QDate, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from gateway.models import ChargeFilter
from gateway.money import amount_problem, exponent

CURRENCIES = ("usd", "eur", "gbp", "cad", "aud", "chf", "jpy", "sek")


def date_range(since: QDate | None, until: QDate | None) -> tuple[int | None, int | None]:
    """Local-day bounds as UTC epoch seconds: [start of since, start of the day after until)."""
    start = since.startOfDay().toSecsSinceEpoch() if since is not None else None
    end = until.addDays(1).startOfDay().toSecsSinceEpoch() if until is not None else None
    return start, end


class ExportDialog(QDialog):
    """Asks for the date range and the file; the window runs the export."""

    def __init__(self, base_filter: ChargeFilter, default_dir: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Export CSV")
        self.base_filter = base_filter
        self.all_dates = QCheckBox("All dates")
        self.all_dates.setChecked(True)
        today = QDate.currentDate()
        self.since = QDateEdit(today.addMonths(-1))
        self.until = QDateEdit(today)
        for edit in (self.since, self.until):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
        self.use_table_filter = QCheckBox("Only payments matching the table's filter")
        self.path = QLineEdit(str(default_dir / f"ursus-{today.toString('yyyy-MM-dd')}.csv"))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.on_browse_clicked)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(browse)
        self.all_dates.toggled.connect(self.on_all_dates_toggled)
        self.on_all_dates_toggled(True)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("", self.all_dates)
        form.addRow("From", self.since)
        form.addRow("To (inclusive)", self.until)
        form.addRow("", self.use_table_filter)
        form.addRow("File", path_row)
        form.addRow(buttons)

    @Slot(bool)
    def on_all_dates_toggled(self, checked: bool) -> None:
        self.since.setEnabled(not checked)
        self.until.setEnabled(not checked)

    @Slot()
    def on_browse_clicked(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Export CSV", self.path.text(), "CSV (*.csv)")
        if name:
            self.path.setText(name)

    def charge_filter(self) -> ChargeFilter:
        base = self.base_filter if self.use_table_filter.isChecked() else ChargeFilter()
        if self.all_dates.isChecked():
            return ChargeFilter(text=base.text, statuses=base.statuses)
        since, until = date_range(self.since.date(), self.until.date())
        return ChargeFilter(text=base.text, statuses=base.statuses, since=since, until=until)

    def target(self) -> Path:
        return Path(self.path.text()).expanduser()


def parse_amount(text: str, currency: str) -> tuple[int | None, str]:
    """'100.00' usd -> (10000, ''); otherwise (None, why)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None, "enter an amount like 100.00"
    minor = value * (Decimal(10) ** exponent(currency))
    if minor != minor.to_integral_value():
        return None, f"{currency.upper()} has {exponent(currency)} decimals"
    amount = int(minor)
    problem = amount_problem(amount, currency)
    return (None, f"amount {problem}") if problem else (amount, "")


class SimulateDialog(QDialog):
    """Amount and currency of one sandbox sale."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Simulate payment")
        self.amount_edit = QLineEdit("100.00")
        self.currency = QComboBox()
        self.currency.addItems([c.upper() for c in CURRENCIES])
        self.problem = QLabel()
        self.problem.setObjectName("problemLabel")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Pay")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Amount", self.amount_edit)
        form.addRow("Currency", self.currency)
        form.addRow(self.problem)
        form.addRow(self.buttons)
        self.amount_edit.textChanged.connect(self.on_input_changed)
        self.currency.currentTextChanged.connect(self.on_input_changed)
        self.on_input_changed("")

    def currency_code(self) -> str:
        return self.currency.currentText().lower()

    def amount(self) -> int | None:
        return parse_amount(self.amount_edit.text(), self.currency_code())[0]

    @Slot(str)
    def on_input_changed(self, _text: str) -> None:
        amount, problem = parse_amount(self.amount_edit.text(), self.currency_code())
        self.problem.setText(problem)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(amount is not None)
