"""The status header: running state, mode band, Stripe reachability, counts, URLs."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QToolButton,
    QWidget,
)

from gateway.config import Mode
from ursus_desktop import resources
from ursus_desktop.controller import GatewayController

MODE_TEXT: dict[Mode | None, str] = {
    Mode.SANDBOX: "SANDBOX",
    Mode.TEST: "TEST",
    Mode.LIVE: "LIVE",
    None: "NOT CONFIGURED",
}


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    return f"{hours}:{minutes:02d}:{secs:02d}"


class _UrlField(QWidget):
    """A read-only URL with a copy button."""

    def __init__(self, label: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.caption = QLabel(label)
        self.edit = QLineEdit()
        self.edit.setReadOnly(True)
        self.copy_button = QToolButton()
        self.copy_button.setIcon(QIcon(str(resources.path("icons/copy.svg"))))
        self.copy_button.setToolTip(f"Copy the {label.rstrip(':').lower()}")
        self.copy_button.clicked.connect(self.on_copy_clicked)
        layout.addWidget(self.caption)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.copy_button)

    def set_text(self, text: str, placeholder: str = "") -> None:
        self.edit.setText(text)
        self.edit.setPlaceholderText(placeholder)
        self.copy_button.setEnabled(bool(text))

    @Slot()
    def on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.edit.text())


class StatusHeader(QFrame):
    """Reads the controller's state; refreshed by its signals and a one-second timer."""

    def __init__(self, controller: GatewayController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setFrameShape(QFrame.Shape.StyledPanel)

        self.mode_band = QFrame()
        self.mode_band.setObjectName("modeBand")
        band_layout = QHBoxLayout(self.mode_band)
        band_layout.setContentsMargins(8, 2, 8, 2)
        self.mode_label = QLabel()
        self.mode_label.setObjectName("modeLabel")
        self.mode_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        band_layout.addWidget(self.mode_label)

        self.running_label = QLabel()
        self.running_label.setObjectName("runningLabel")
        self.stripe_label = QLabel()
        self.counts_label = QLabel()
        self.webhook = _UrlField("Webhook URL:")
        self.public = _UrlField("Public URL:")

        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 6)
        grid.addWidget(self.mode_band, 0, 0)
        grid.addWidget(self.running_label, 0, 1)
        grid.addWidget(self.stripe_label, 0, 2)
        grid.addWidget(self.counts_label, 0, 3)
        grid.setColumnStretch(3, 1)
        grid.addWidget(self.webhook, 1, 0, 1, 2)
        grid.addWidget(self.public, 1, 2, 1, 2)

        controller.running_changed.connect(self.on_controller_running_changed)
        controller.busy_changed.connect(self.on_controller_running_changed)
        controller.counts_changed.connect(self.on_controller_counts_changed)
        controller.secrets_loaded.connect(self.on_controller_running_changed)
        controller.settings_saved.connect(self.on_controller_running_changed)
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self.on_timer_timeout)
        self._timer.start()
        self.refresh()

    def refresh(self) -> None:
        self._refresh_state()
        self._refresh_counts()

    def _refresh_state(self) -> None:
        c = self.controller
        mode = c.mode
        self.mode_label.setText(MODE_TEXT[mode])
        self.mode_band.setProperty("mode", str(mode) if mode else "none")
        self.mode_band.setToolTip(
            {
                Mode.SANDBOX: "Offline simulator: no real money moves.",
                Mode.TEST: "Stripe test mode: test cards, no real money.",
                Mode.LIVE: "Stripe live mode: real money.",
            }.get(mode, "No Stripe key configured.")
            if mode
            else "No Stripe key configured."
        )
        running = c.is_running
        if c.busy:
            text = "Stopping…" if running else "Starting…"
        elif running and c.server is not None:
            text = f"Running on port {c.server.port} · up {format_uptime(c.uptime())}"
        else:
            text = "Stopped"
        self.running_label.setText(text)
        self.running_label.setProperty("running", "true" if running else "false")
        connected = c.stripe_connected()
        self.stripe_label.setText(
            "Stripe: reachable"
            if connected
            else "Stripe: UNREACHABLE"
            if connected is False
            else "Stripe: —"
        )
        self.webhook.set_text(c.webhook_url())
        self.public.set_text(
            c.public_webhook_url(), "set a public URL (tunnel) in Settings to receive webhooks"
        )
        for widget in (self.mode_band, self.running_label):
            widget.style().unpolish(widget)
            widget.style().polish(widget)

    def _refresh_counts(self) -> None:
        counts = self.controller.counts()
        if counts is None:
            self.counts_label.setText("")
            return
        self.counts_label.setText(
            f"{counts.charges} charges · {counts.pending_transfers} pending · "
            f"{counts.failed_transfers} failed transfers"
        )

    @Slot()
    @Slot(bool)
    def on_controller_running_changed(self, _value: bool = False) -> None:
        self.refresh()

    @Slot(object)
    def on_controller_counts_changed(self, _counts: object) -> None:
        self._refresh_counts()

    @Slot()
    def on_timer_timeout(self) -> None:
        self._refresh_state()
