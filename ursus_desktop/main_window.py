"""The URSUS main window: header, payments table with filters and totals, details, logs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QDate, QModelIndex, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence, QPaintEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressDialog,
    QSplitter,
    QSystemTrayIcon,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from gateway.models import (
    ChargeFilter,
    ChargeView,
    Counts,
    TimelineEntry,
    Totals,
    TransferStatus,
)
from gateway.money import to_major
from ursus_desktop import APP_NAME, resources
from ursus_desktop.controller import GatewayController
from ursus_desktop.detail_pane import DetailPane
from ursus_desktop.dialogs import ExportDialog, SimulateDialog, date_range
from ursus_desktop.logs_view import LogsView
from ursus_desktop.payments_model import (
    STATUS_TEXT,
    ChargesModel,
    ChargesProxy,
    Column,
)
from ursus_desktop.settings_dialog import SettingsDialog
from ursus_desktop.status_header import MODE_TEXT, StatusHeader

if TYPE_CHECKING:
    from gateway.ledger import Ledger

FILTER_DELAY_MS = 250  # typing in the filter box re-queries once the user pauses


def icon(name: str) -> QIcon:
    return QIcon(str(resources.path(f"icons/{name}.svg")))


class PaymentsTable(QTableView):
    """The payments table view; it paints in one call into Python instead of hundreds."""

    def paintEvent(self, event: QPaintEvent) -> None:
        # Painting calls the model for every cell (multiData, index: ~300 calls from Qt
        # into Python). Called from the event loop, each must first win the GIL from the
        # gateway's busy threads; entered from Python, the paint keeps the GIL it has, and
        # the model's calls cost no hand-over. Live burst: longest stall ~35 -> ~24 ms.
        super().paintEvent(event)


def totals_text(totals: list[Totals]) -> str:
    """One line per currency: count, gross, fees, commission, transferred."""
    if not totals:
        return "No payments match."
    parts = []
    for t in totals:
        cur = t.currency.upper()

        def m(amount: int, currency: str = t.currency, code: str = cur) -> str:
            return f"{to_major(amount, currency)} {code}"

        parts.append(
            f"{t.count} payments · gross {m(t.gross)} · Stripe fees {m(t.stripe_fee)} · "
            f"commission {m(t.commission)} · transferred {m(t.transferred)}"
            + (f" · refunded {m(t.refunded)}" if t.refunded else "")
        )
    return "\n".join(parts)


class MainWindow(QMainWindow):
    """Wires the controller's signals to the widgets; owns no thread."""

    def __init__(
        self,
        controller: GatewayController,
        *,
        tray: bool | None = None,
        first_run_prompt: bool = True,
    ) -> None:
        super().__init__()
        self.controller = controller
        self.settings_store = QSettings()
        self.last_message: tuple[str, str] = ("", "")
        self._quitting = False
        self._counts: Counts | None = None
        self._first_run_prompt = first_run_prompt
        self._asked_first_run = False
        self._demo_sale_pending = False
        self._detail_waits_for_row = False  # the current row was not read yet
        self.setWindowIcon(icon("ursus"))
        self.setMinimumSize(640, 420)  # small screens: splitter and scroll areas adapt

        self.header = StatusHeader(controller)
        self.model = ChargesModel(self, reader=controller.reader)
        self.proxy = ChargesProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = PaymentsTable()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(Column.TIME, Qt.SortOrder.DescendingOrder)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setDefaultSectionSize(110)
        for column, width in ((Column.TIME, 150), (Column.ORDER, 150), (Column.CHARGE, 160)):
            self.table.horizontalHeader().resizeSection(column, width)
        self.table.verticalHeader().setVisible(False)
        # Fixed row heights: the view never measures rows it does not show.
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.horizontalHeader().setSectionsMovable(True)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.detail = DetailPane()
        self.totals_label = QLabel()
        self.totals_label.setObjectName("totalsLabel")
        self.totals_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        # Filters.
        self.filter_text = QLineEdit()
        self.filter_text.setPlaceholderText("Filter by order, charge or payment intent id (Ctrl+F)")
        self.filter_text.setClearButtonEnabled(True)
        self.filter_status = QComboBox()
        self.filter_status.addItem("All statuses", "")
        for status in TransferStatus:
            self.filter_status.addItem(STATUS_TEXT[status], str(status))
        self.filter_all_dates = QCheckBox("All dates")
        self.filter_all_dates.setChecked(True)
        self.filter_since = QDateEdit(QDate.currentDate().addDays(-30))
        self.filter_until = QDateEdit(QDate.currentDate())
        for edit in (self.filter_since, self.filter_until):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd")
            edit.setEnabled(False)
        filter_bar = QHBoxLayout()
        filter_bar.addWidget(self.filter_text, 2)
        filter_bar.addWidget(self.filter_status)
        filter_bar.addWidget(self.filter_all_dates)
        filter_bar.addWidget(self.filter_since)
        filter_bar.addWidget(QLabel("to"))
        filter_bar.addWidget(self.filter_until)
        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(FILTER_DELAY_MS)
        self._filter_timer.timeout.connect(self.on_filter_timer_timeout)
        self.filter_text.textChanged.connect(self.on_filter_edited)
        self.filter_status.currentIndexChanged.connect(self.on_filter_edited)
        self.filter_all_dates.toggled.connect(self.on_filter_edited)
        self.filter_since.dateChanged.connect(self.on_filter_edited)
        self.filter_until.dateChanged.connect(self.on_filter_edited)

        table_box = QWidget()
        table_layout = QVBoxLayout(table_box)
        table_layout.setContentsMargins(0, 0, 0, 0)
        table_layout.addLayout(filter_bar)
        table_layout.addWidget(self.table, 1)
        table_layout.addWidget(self.totals_label)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(table_box)
        self.splitter.addWidget(self.detail)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(True)

        self.logs = LogsView(controller.log_dir)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.splitter, "Payments")
        self.tabs.addTab(self.logs, "Logs")
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.header)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self._make_actions()
        self.tray: QSystemTrayIcon | None = None
        if tray if tray is not None else QSystemTrayIcon.isSystemTrayAvailable():
            self._make_tray()

        self.progress: QProgressDialog | None = None

        # Controller -> window (some of these are emitted from worker threads: bound slots).
        c = controller
        c.running_changed.connect(self.on_controller_running_changed)
        c.busy_changed.connect(self.on_controller_busy_changed)
        c.failed.connect(self.on_controller_failed)
        c.ledger_opened.connect(self.on_controller_ledger_opened)
        c.ledger_changed.connect(self.on_controller_ledger_changed)
        c.counts_changed.connect(self.on_controller_counts_changed)
        c.secrets_loaded.connect(self.on_controller_secrets_loaded)
        c.settings_saved.connect(self.on_controller_settings_saved)
        c.export_progressed.connect(self.on_export_progressed)
        c.export_finished.connect(self.on_export_finished)
        c.export_cancelled.connect(self.on_export_cancelled)
        c.export_failed.connect(self.on_export_failed)
        c.payment_simulated.connect(self.on_payment_simulated)
        c.transfer_retried.connect(self.on_transfer_retried)
        self.model.totals_changed.connect(self.on_model_totals_changed)
        self.model.page_loaded.connect(self.on_model_page_loaded)
        self.table.selectionModel().currentRowChanged.connect(self.on_table_current_changed)
        self.detail.retry_requested.connect(self.on_detail_retry_requested)

        self._restore_layout()
        self._update_actions()
        self._update_title()
        self.on_model_totals_changed()
        if c.settings_problem:
            self.show_message("Settings", c.settings_problem, warning=True)

    # -- construction ------------

    def _action(
        self,
        text: str,
        slot: object,
        shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None,
        ico: str = "",
    ) -> QAction:
        action = QAction(icon(ico) if ico else QIcon(), text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setToolTip(f"{text} ({action.shortcut().toString()})")
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work even with the toolbar hidden
        return action

    def _make_actions(self) -> None:
        self.start_action = self._action("Start", self.on_start_triggered, "F5", "start")
        self.stop_action = self._action("Stop", self.on_stop_triggered, "Shift+F5", "stop")
        self.settings_action = self._action(
            "Settings…",
            self.on_settings_triggered,
            QKeySequence.StandardKey.Preferences,
            "settings",
        )
        if self.settings_action.shortcut().isEmpty():
            self.settings_action.setShortcut(QKeySequence("Ctrl+,"))
        self.export_action = self._action(
            "Export CSV…", self.on_export_triggered, "Ctrl+E", "export"
        )
        self.simulate_action = self._action(
            "Simulate payment…", self.on_simulate_triggered, "Ctrl+Shift+P", "simulate"
        )
        self.sandbox_action = self._action("Sandbox mode", self.on_sandbox_toggled)
        self.sandbox_action.setCheckable(True)
        self.sandbox_action.setChecked(self.controller.sandbox)
        self.find_action = self._action("Find", self.on_find_triggered, "Ctrl+F")
        self.retry_action = self._action("Retry transfer", self.on_retry_triggered, "Ctrl+R")
        self.copy_action = self._action("Copy charge id", self.on_copy_triggered, "Ctrl+Shift+C")
        self.logs_action = self._action("Show logs", self.on_logs_triggered, "Ctrl+L")
        self.quit_action = self._action("Quit", self.on_quit_triggered, "Ctrl+Q")

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.addAction(self.export_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        gateway_menu = menu.addMenu("&Gateway")
        for action in (self.start_action, self.stop_action):
            gateway_menu.addAction(action)
        gateway_menu.addSeparator()
        gateway_menu.addAction(self.sandbox_action)
        gateway_menu.addAction(self.simulate_action)
        gateway_menu.addSeparator()
        gateway_menu.addAction(self.settings_action)
        view_menu = menu.addMenu("&View")
        for action in (self.find_action, self.logs_action, self.retry_action, self.copy_action):
            view_menu.addAction(action)

        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("mainToolbar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for action in (
            self.start_action,
            self.stop_action,
            self.export_action,
            self.simulate_action,
            self.settings_action,
        ):
            toolbar.addAction(action)

    def _make_tray(self) -> None:
        self.tray = QSystemTrayIcon(icon("ursus"), self)
        menu = QMenu(self)
        self.show_action = QAction("Show window", self)
        self.show_action.triggered.connect(self.on_show_triggered)
        menu.addAction(self.show_action)
        menu.addAction(self.start_action)
        menu.addAction(self.stop_action)
        menu.addSeparator()
        menu.addAction(self.quit_action)
        self.tray.setContextMenu(menu)
        self.tray.activated.connect(self.on_tray_activated)
        self.tray.show()

    # -- layout memory ------------

    def _restore_layout(self) -> None:
        s = self.settings_store
        geometry = s.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1100, 700)
        state = s.value("window/state")
        if state is not None:
            self.restoreState(state)
        header = s.value("table/header")
        if header is not None:
            self.table.horizontalHeader().restoreState(header)
        splitter = s.value("window/splitter")
        if splitter is not None:
            self.splitter.restoreState(splitter)

    def save_layout(self) -> None:
        s = self.settings_store
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("table/header", self.table.horizontalHeader().saveState())
        s.setValue("window/splitter", self.splitter.saveState())
        s.setValue("gateway/sandbox", self.controller.sandbox)
        s.sync()

    # -- helpers ------------

    def show_message(self, title: str, text: str, *, warning: bool = False) -> None:
        """A non-blocking message box (and the status bar), remembered for tests."""
        self.last_message = (title, text)
        self.statusBar().showMessage(text.splitlines()[0] if text else "", 10000)
        box = QMessageBox(
            QMessageBox.Icon.Warning if warning else QMessageBox.Icon.Information,
            title,
            text,
            QMessageBox.StandardButton.Ok,
            self,
        )
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def ask(self, title: str, text: str, buttons: list[str]) -> str:
        """A modal question; returns the chosen button text ('' on escape)."""
        box = QMessageBox(
            QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.NoButton, self
        )
        made = [box.addButton(b, QMessageBox.ButtonRole.AcceptRole) for b in buttons]
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        for button, label in zip(made, buttons, strict=True):
            if clicked is button:
                return label
        return ""

    def notify(self, title: str, text: str) -> None:
        """A tray balloon when a tray exists (never with a secret in it)."""
        if self.tray is not None and QSystemTrayIcon.supportsMessages():
            self.tray.showMessage(title, text, QSystemTrayIcon.MessageIcon.Information, 5000)

    def current_filter(self) -> ChargeFilter:
        status = self.filter_status.currentData()
        statuses = frozenset({TransferStatus(status)}) if status else frozenset()
        since = until = None
        if not self.filter_all_dates.isChecked():
            since, until = date_range(self.filter_since.date(), self.filter_until.date())
        return ChargeFilter(
            text=self.filter_text.text().strip(), statuses=statuses, since=since, until=until
        )

    def selected_charge(self) -> ChargeView | None:
        index = self.table.currentIndex()
        if not index.isValid():
            return None
        return self.model.charge_at(self.proxy.mapToSource(index).row())

    def _update_actions(self) -> None:
        c = self.controller
        running, busy = c.is_running, c.busy
        self.start_action.setEnabled(not running and not busy)
        self.stop_action.setEnabled(running and not busy)
        self.sandbox_action.setEnabled(not running and not busy)
        self.sandbox_action.setChecked(c.sandbox)
        self.simulate_action.setEnabled(running and not busy and c.sandbox)
        self.settings_action.setEnabled(not busy)

    def _update_title(self) -> None:
        # Only the mode and names: never a key (DESIGN §5).
        mode = MODE_TEXT[self.controller.mode]
        state = "running" if self.controller.is_running else "stopped"
        title = f"{APP_NAME} — {self.controller.settings.platform_name} [{mode}, {state}]"
        self.setWindowTitle(title)
        if self.tray is not None:
            self.tray.setToolTip(title)

    def _show_selected(self) -> None:
        """The detail pane follows the current row (its charge and timeline read by id)."""
        # Off the GUI thread: during a burst of sales this runs a few times a second.
        ledger = self.controller.ledger
        if not self.table.currentIndex().isValid() or ledger is None:
            self._detail_waits_for_row = False
            self.detail.show_charge(None, [])
            return
        view = self.selected_charge()
        self._detail_waits_for_row = view is None
        if view is None:
            return  # its row is being read: on_model_page_loaded comes back here
        if self.detail.charge is None or self.detail.charge.charge_id != view.charge_id:
            self.detail.show_charge(view, [])  # the table's row at once, the timeline follows
        charge_id = view.charge_id
        self.controller.reader.submit(
            "detail",
            lambda: (ledger.get_charge(charge_id), ledger.timeline(charge_id)),
            lambda result: self._apply_detail(ledger, charge_id, result),
            self._detail_failed,
        )

    def _apply_detail(
        self, ledger: Ledger, charge_id: str, result: tuple[ChargeView | None, list[TimelineEntry]]
    ) -> None:
        view = self.selected_charge()
        if ledger is not self.controller.ledger or view is None or view.charge_id != charge_id:
            return  # the selection moved on: its own read follows
        fresh, timeline = result
        self.detail.show_charge(fresh or view, timeline)

    def _detail_failed(self, message: str) -> None:
        self.statusBar().showMessage(f"The ledger could not be read: {message}", 10000)

    def _notify_changes(self, counts: Counts | None) -> None:
        old, self._counts = self._counts, counts
        if old is None or counts is None:
            return
        if counts.charges > old.charges:
            new = counts.charges - old.charges
            self.notify("New sale", f"{new} new payment{'s' if new > 1 else ''} received.")
        if counts.failed_transfers > old.failed_transfers:
            self.notify("Transfer failed", "A vendor transfer failed: see the payments table.")

    # -- slots: controller ------------

    @Slot(bool)
    def on_controller_running_changed(self, running: bool) -> None:
        self._update_actions()
        self._update_title()
        self.logs.set_log_dir(self.controller.log_dir)
        self.statusBar().showMessage("Gateway running" if running else "Gateway stopped", 5000)
        if running and self._demo_sale_pending:
            self._demo_sale_pending = False
            self.controller.simulate_payment(10000, "usd")
            self.statusBar().showMessage("Sandbox: a simulated $100.00 sale is on its way", 8000)

    @Slot(bool)
    def on_controller_busy_changed(self, _busy: bool) -> None:
        self._update_actions()

    @Slot(str)
    def on_controller_failed(self, message: str) -> None:
        self._update_actions()
        self.show_message("URSUS", message, warning=True)

    @Slot()
    def on_controller_ledger_opened(self) -> None:
        self.model.set_ledger(self.controller.ledger)
        self._counts = None  # the next counts_changed is a baseline, not news
        self._show_selected()

    @Slot()
    def on_controller_ledger_changed(self) -> None:
        # The controller sends this at most every CHANGED_MS during a burst.
        self.model.refresh()
        self._show_selected()

    @Slot(object)
    def on_controller_counts_changed(self, counts: Counts | None) -> None:
        self._notify_changes(counts)

    @Slot()
    def on_controller_secrets_loaded(self) -> None:
        self._update_actions()
        self._update_title()
        if self._first_run_prompt and not self._asked_first_run:
            self._asked_first_run = True
            c = self.controller
            if not c.sandbox and not c.secrets.stripe_secret_key:
                self.offer_sandbox()

    def offer_sandbox(self) -> None:
        """First run without keys: try everything offline, or enter the keys."""
        choice = self.ask(
            "Welcome to URSUS",
            "No Stripe keys are configured yet.\n\nSandbox mode runs the whole flow offline "
            "with a simulated Stripe (no real money). You can enter your keys any time "
            "in Settings.",
            ["Use Sandbox", "Enter keys…"],
        )
        if choice == "Use Sandbox":
            self.controller.set_sandbox(True)
            self._update_actions()
            # Zero configuration: start at once and send one $100 sale through, so the
            # first thing a new merchant sees is the whole flow working.
            self._demo_sale_pending = True
            self.controller.start()
        elif choice == "Enter keys…":
            self.on_settings_triggered()

    @Slot()
    def on_controller_settings_saved(self) -> None:
        self._update_title()
        self.statusBar().showMessage("Settings saved", 5000)

    @Slot(int)
    def on_export_progressed(self, rows: int) -> None:
        # Busy bar (maximum 0) until the row count arrives: a value would reset it.
        if self.progress is not None and self.progress.maximum() > 0:
            self.progress.setValue(min(rows, self.progress.maximum()))

    @Slot(int, str)
    def on_export_finished(self, rows: int, path: str) -> None:
        self._close_progress()
        self.show_message("Export finished", f"{rows} payments written to {path}")

    @Slot()
    def on_export_cancelled(self) -> None:
        self._close_progress()
        self.statusBar().showMessage("Export cancelled", 5000)

    @Slot(str)
    def on_export_failed(self, message: str) -> None:
        self._close_progress()
        self.show_message("Export failed", message, warning=True)

    @Slot(str)
    def on_payment_simulated(self, charge_id: str) -> None:
        self.statusBar().showMessage(f"Simulated payment {charge_id} sent", 5000)

    @Slot(str, bool)
    def on_transfer_retried(self, charge_id: str, queued: bool) -> None:
        if queued:
            self.statusBar().showMessage(f"Transfer of {charge_id} queued again", 5000)
        else:
            self.show_message("Retry transfer", f"The transfer of {charge_id} was not retried.")
        self._show_selected()

    # -- slots: widgets ------------

    @Slot()
    def on_model_totals_changed(self) -> None:
        self.totals_label.setText(totals_text(self.model.totals))

    @Slot()
    def on_model_page_loaded(self) -> None:
        if self._detail_waits_for_row:
            self._show_selected()

    @Slot(QModelIndex, QModelIndex)
    def on_table_current_changed(self, _current: QModelIndex, _previous: QModelIndex) -> None:
        self._show_selected()

    @Slot()
    @Slot(str)
    @Slot(int)
    @Slot(bool)
    @Slot(QDate)
    def on_filter_edited(self, _value: object = None) -> None:
        dated = not self.filter_all_dates.isChecked()
        self.filter_since.setEnabled(dated)
        self.filter_until.setEnabled(dated)
        self._filter_timer.start()

    @Slot()
    def on_filter_timer_timeout(self) -> None:
        self.model.set_filter(self.current_filter())
        self._show_selected()

    @Slot(str)
    def on_detail_retry_requested(self, charge_id: str) -> None:
        self.controller.retry_transfer(charge_id)

    # -- slots: actions ------------

    @Slot()
    def on_start_triggered(self) -> None:
        self.controller.start()

    @Slot()
    def on_stop_triggered(self) -> None:
        self.controller.stop()

    @Slot()
    def on_sandbox_toggled(self) -> None:
        self.controller.set_sandbox(self.sandbox_action.isChecked())
        self._update_actions()
        self._update_title()

    @Slot()
    def on_settings_triggered(self) -> None:
        c = self.controller
        if not c.secrets_known:
            self.show_message(
                "Settings",
                "The keyring has not been read (yet): see the message about it.",
                warning=True,
            )
            return
        dialog = SettingsDialog(c, c.secrets, c.settings, c.ledger_mode(), self)
        if dialog.exec():
            c.save(dialog.secrets(), dialog.settings())
            if c.is_running:
                self.statusBar().showMessage("Restart the gateway to apply the new settings", 10000)

    @Slot()
    def on_export_triggered(self) -> None:
        dialog = ExportDialog(self.current_filter(), Path.home(), self)
        if dialog.exec():
            self.start_export(dialog.target(), dialog.charge_filter())

    def start_export(self, path: Path, charge_filter: ChargeFilter) -> None:
        ledger = self.controller.ledger
        if ledger is None:
            self.show_message("Export", "The ledger is not open yet.", warning=True)
            return
        # A busy bar until the row count (a COUNT, read off the GUI thread) sets the range.
        progress = QProgressDialog("Exporting payments…", "Cancel", 0, 0, self)
        progress.setWindowTitle("Export CSV")
        progress.setMinimumDuration(500)
        progress.setWindowModality(Qt.WindowModality.WindowModal)
        progress.canceled.connect(self.on_progress_canceled)
        self.progress = progress

        def apply_total(total: int) -> None:
            if self.progress is progress:
                progress.setMaximum(max(total, 1))

        self.controller.reader.submit(
            "export-count",
            lambda: ledger.count_charges(charge_filter),
            apply_total,
            lambda _message: None,  # the export itself reports a failing ledger
        )
        self.controller.export_csv(path, charge_filter)

    @Slot()
    def on_progress_canceled(self) -> None:
        self.controller.cancel_export()

    def _close_progress(self) -> None:
        if self.progress is not None:
            self.progress.canceled.disconnect(self.on_progress_canceled)
            self.progress.reset()
            self.progress.deleteLater()
            self.progress = None

    @Slot()
    def on_simulate_triggered(self) -> None:
        dialog = SimulateDialog(self)
        if dialog.exec():
            amount = dialog.amount()
            if amount is not None:
                self.controller.simulate_payment(amount, dialog.currency_code())

    @Slot()
    def on_find_triggered(self) -> None:
        self.tabs.setCurrentIndex(0)
        self.filter_text.setFocus()
        self.filter_text.selectAll()

    @Slot()
    def on_retry_triggered(self) -> None:
        self.detail.on_retry_clicked()

    @Slot()
    def on_copy_triggered(self) -> None:
        self.detail.on_copy_clicked()

    @Slot()
    def on_logs_triggered(self) -> None:
        self.tabs.setCurrentWidget(self.logs)

    @Slot()
    def on_show_triggered(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    @Slot(QSystemTrayIcon.ActivationReason)
    def on_tray_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.on_show_triggered()

    @Slot()
    def on_quit_triggered(self) -> None:
        self._quitting = True
        self.close()

    # -- closing ------------

    def closeEvent(self, event: QCloseEvent) -> None:
        c = self.controller
        quitting, self._quitting = self._quitting, False
        if c.is_running:
            options = ["Stop and quit"]
            if self.tray is not None and not quitting:
                options.append("Keep running in the tray")
            choice = self.ask(
                "Quit URSUS?",
                "The gateway is running. Quitting stops it: Stripe will retry webhooks it "
                "sends meanwhile, for up to 3 days.",
                options,
            )
            if choice == "Keep running in the tray":
                self.hide()
                self.notify(APP_NAME, "The gateway keeps running; the tray icon brings it back.")
                event.ignore()
                return
            if choice != "Stop and quit":
                event.ignore()
                return
        self.save_layout()
        c.shutdown()
        if self.tray is not None:
            self.tray.hide()
        event.accept()
