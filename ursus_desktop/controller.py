"""GatewayController: the one object that meets non-GUI threads (DESIGN §6).

Everything slow (binding the port, opening the ledger, the keyring, Stripe calls,
exports, simulated sales) runs on the controller's thread pool. Worker code only
emits signals; the private ``_..._done`` signals are connected with
QueuedConnection to bound slots of this object, so the controller's state is only
ever changed on the GUI thread. Other widgets listen to the public signals.
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, QTimer, Signal, Slot

from gateway.config import (
    GatewayConfig,
    Mode,
    Secrets,
    Settings,
    default_config_path,
    default_data_dir,
    default_log_dir,
    load_settings,
    save_settings,
)
from gateway.errors import StorageError, StripeError
from gateway.models import ChargeFilter, Counts
from ursus_desktop.reader import LedgerReader
from ursus_desktop.secret_store import SecretStore, SecretStoreError

if TYPE_CHECKING:
    from gateway.ledger import Ledger
    from gateway.service import GatewayServer

log = logging.getLogger(__name__)

POLL_MS = 1000  # light poll for writes by another process (ursus-gateway, a CLI)
# Ledger changes come in bursts (a rush of sales): views hear of them at once, then at
# most every CHANGED_MS, so the GUI thread keeps up however fast the gateway writes.
CHANGED_MS = 250
# Waitress threads of the embedded gateway. Each is a Python thread competing with the
# window for the GIL; one merchant's webhooks need few (docs/BENCHMARKS.md, live burst).
GATEWAY_THREADS = 4


def _freeze_long_lived() -> None:
    """Keep what exists now out of full garbage collections (until ``gc.unfreeze()``)."""
    # A running gateway's objects (Flask app, waitress, Stripe client, ledger) live until
    # it stops. A full collection scans them all and stops every thread meanwhile: 15-30
    # ms in the live burst, a stall of the window. Frozen, the burst has none. The one
    # collection here (tens of ms) happens once per start or stop, as the user waits.
    gc.collect()
    gc.freeze()


class _Job(QRunnable):
    """Runs one callable on the pool; the callable reports by emitting signals."""

    def __init__(self, fn: Callable[[], None]) -> None:
        super().__init__()
        self._fn = fn

    def run(self) -> None:
        try:
            self._fn()
        except Exception:  # a bug in a job: keep the traceback in the log, never crash the pool
            log.exception("background job failed")


def start_error_message(exc: BaseException) -> str:
    """A user-facing message for a failed start, by whose fault it is (STYLE §8)."""
    from gateway.wsgi_server import PortInUseError

    if isinstance(exc, PortInUseError):
        return str(exc)
    if isinstance(exc, ValueError):  # ConfigError: missing or malformed settings
        return f"{exc}\n\nOpen Settings to fix this, or use Sandbox mode to try URSUS offline."
    if isinstance(exc, StorageError):
        return f"The ledger cannot be used: {exc}"
    if isinstance(exc, PermissionError):
        return "Permission denied while starting the gateway: choose another port or folder."
    if isinstance(exc, OSError):
        return f"The gateway could not start: {exc.strerror or type(exc).__name__}"
    return f"The gateway could not start ({type(exc).__name__}); see the error log."


class GatewayController(QObject):
    """Owns the embedded GatewayServer, the ledger, the settings and the secrets."""

    running_changed = Signal(bool)
    busy_changed = Signal(bool)
    failed = Signal(str)  # a message for the user
    ledger_opened = Signal()  # ``ledger`` is a different object now (or None)
    ledger_changed = Signal()  # something was committed
    counts_changed = Signal(object)  # Counts | None, read off the GUI thread
    secrets_loaded = Signal()
    settings_saved = Signal()
    connection_tested = Signal(bool, str)
    export_progressed = Signal(int)
    export_finished = Signal(int, str)
    export_cancelled = Signal()
    export_failed = Signal(str)
    payment_simulated = Signal(str)
    transfer_retried = Signal(str, bool)

    # Worker -> controller (queued to the GUI thread).
    _started_done = Signal(object)
    _start_failed = Signal(str)
    _stopped_done = Signal()
    _ledger_done = Signal(object, str)
    _secrets_done = Signal(object, bool)
    _secrets_failed = Signal(str)
    _ledger_written = Signal()

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        store: SecretStore | None = None,
        config_path: Path | None = None,
        data_dir: Path | None = None,
        log_dir: Path | None = None,
        sandbox: bool = False,
    ) -> None:
        super().__init__(parent)
        self.store = store or SecretStore()
        self.config_path = config_path or default_config_path()
        self.data_dir = data_dir or default_data_dir()
        self.log_dir = log_dir or default_log_dir()
        self.sandbox = sandbox
        self.secrets = Secrets()
        self.secrets_known = False  # True once the keyring was read successfully
        self.settings_problem = ""
        try:
            self.settings = load_settings(self.config_path)
        except ValueError as exc:
            self.settings = Settings()
            self.settings_problem = f"The settings file is invalid and was ignored: {exc}"
        self.server: GatewayServer | None = None
        self.ledger: Ledger | None = None
        self._ledger_url = ""
        self._busy = False
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(4)
        self._notify_pending = threading.Event()
        self._export_cancel = threading.Event()
        self._last_version: int | None = None
        self._notified_since_poll = False
        self._counts: Counts | None = None
        self.gateway_threads = GATEWAY_THREADS  # for the next start()
        # Reads for the views (counts, the table's COUNT and totals) run here, never on
        # the GUI thread; the payments model shares it.
        self.reader = LedgerReader(self)

        queued = self._queued
        self._started_done.connect(self.on_start_succeeded, queued)
        self._start_failed.connect(self.on_start_failed, queued)
        self._stopped_done.connect(self.on_stop_finished, queued)
        self._ledger_done.connect(self.on_ledger_ready, queued)
        self._secrets_done.connect(self.on_secrets_ready, queued)
        self._secrets_failed.connect(self.on_secrets_failed, queued)
        self._ledger_written.connect(self.on_ledger_written, queued)

        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self.on_poll_timeout)
        self._poll.start()
        self._changed_timer = QTimer(self)
        self._changed_timer.setSingleShot(True)
        self._changed_timer.setInterval(CHANGED_MS)
        self._changed_timer.timeout.connect(self.on_changed_timer_timeout)
        self._changed_pending = False

    @property
    def _queued(self):  # type: ignore[no-untyped-def]
        from PySide6.QtCore import Qt

        return Qt.ConnectionType.QueuedConnection

    # -- state ------------

    @property
    def is_running(self) -> bool:
        return self.server is not None and self.server.is_running

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def mode(self) -> Mode | None:
        return Mode.SANDBOX if self.sandbox else self.secrets.mode

    def config(self) -> GatewayConfig:
        """The configuration a start would use now."""
        config = GatewayConfig(
            secrets=self.secrets,
            settings=self.settings,
            data_dir=self.data_dir,
            log_dir=self.log_dir,
        )
        return config.for_sandbox() if self.sandbox else config

    def webhook_url(self) -> str:
        if self.server is not None and self.is_running:
            return self.server.webhook_url
        host = self.settings.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 (display only)
        return f"http://{shown}:{self.settings.port}/webhook"

    def public_webhook_url(self) -> str:
        base = self.settings.public_url.rstrip("/")
        return f"{base}/webhook" if base else ""

    def uptime(self) -> float | None:
        if self.server is None or self.server.started_at is None:
            return None
        return max(0.0, time.time() - self.server.started_at)

    def stripe_connected(self) -> bool | None:
        return self.server.stripe_connected() if self.is_running and self.server else None

    def counts(self) -> Counts | None:
        """The header figures as last read (``counts_changed`` announces new ones)."""
        return self._counts

    def _read_counts(self) -> None:
        ledger = self.ledger
        if ledger is None:
            self._counts = None
            self.counts_changed.emit(None)
            return

        def apply(counts: Counts) -> None:
            if ledger is self.ledger:  # not a read of a ledger closed since
                self._counts = counts
                self.counts_changed.emit(counts)

        self.reader.submit("header-counts", ledger.counts, apply)

    def _emit_ledger_opened(self) -> None:
        self.ledger_opened.emit()
        self._read_counts()

    def _emit_ledger_changed(self) -> None:
        if self._changed_timer.isActive():
            self._changed_pending = True  # told at the end of the interval, once
            return
        self._changed_pending = False
        self._changed_timer.start()
        self.ledger_changed.emit()
        self._read_counts()

    @Slot()
    def on_changed_timer_timeout(self) -> None:
        if self._changed_pending and self.ledger is not None:
            self._emit_ledger_changed()

    def ledger_mode(self) -> Mode | None:
        """TEST or LIVE from the newest charge in the ledger; None when empty or sandbox."""
        if self.ledger is None or self.sandbox:
            return None
        try:
            rows = self.ledger.charges_page(ChargeFilter(), 0, 1)
        except StorageError:
            return None
        if not rows:
            return None
        return Mode.LIVE if rows[0].livemode else Mode.TEST

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)

    def _submit(self, fn: Callable[[], None]) -> None:
        self._pool.start(_Job(fn))

    # -- secrets and settings ------------

    def load_secrets(self) -> None:
        """Read the keyring in a worker; ``secrets_loaded`` or ``failed`` follows."""
        store = self.store

        def work() -> None:
            try:
                secrets = store.load()
            except SecretStoreError as exc:
                self._secrets_failed.emit(str(exc))
                return
            self._secrets_done.emit(secrets, False)

        self._submit(work)

    def save(self, secrets: Secrets, settings: Settings) -> None:
        """Settings to the file now, secrets to the keyring in a worker; ``settings_saved``."""
        try:
            save_settings(self.config_path, settings)
        except OSError as exc:
            self.failed.emit(f"Cannot write {self.config_path}: {exc.strerror}")
            return
        old_url = self.config().database_url
        self.settings = settings
        if self.config().database_url != old_url:
            self.open_ledger()
        store = self.store

        def work() -> None:
            try:
                store.save(secrets)
            except SecretStoreError as exc:
                self._secrets_failed.emit(str(exc))
                return
            self._secrets_done.emit(secrets, True)

        self._submit(work)

    @Slot(object, bool)
    def on_secrets_ready(self, secrets: Secrets, saved: bool) -> None:
        self.secrets = secrets
        self.secrets_known = True
        self.secrets_loaded.emit()
        if saved:
            self.settings_saved.emit()

    @Slot(str)
    def on_secrets_failed(self, message: str) -> None:
        self.failed.emit(message)

    def set_sandbox(self, sandbox: bool) -> None:
        """Switch between sandbox and the configured keys (only while stopped)."""
        if self.is_running or self._busy:
            self.failed.emit("Stop the gateway before switching between sandbox and Stripe.")
            return
        if sandbox != self.sandbox:
            self.sandbox = sandbox
            self.open_ledger()
            self.secrets_loaded.emit()  # the mode band follows

    def test_connection(self, secret_key: str, account: str, api_base: str = "") -> None:
        """Retrieve the connected account in a worker; ``connection_tested(ok, message)``."""

        def work() -> None:
            from gateway.stripe_api import StripeGateway

            try:
                gateway = StripeGateway(secret_key, api_base=api_base)
                data = gateway.retrieve_account(account)
            except StripeError as exc:
                # StripeError messages never hold a secret (gateway.errors).
                self.connection_tested.emit(False, f"Stripe refused: {exc}")
                return
            except Exception as exc:
                log.warning("test connection failed: %s", type(exc).__name__)
                self.connection_tested.emit(False, f"Could not reach Stripe ({type(exc).__name__})")
                return
            name = ""
            if isinstance(data, dict):
                profile = data.get("business_profile") or {}
                name = (profile.get("name") if isinstance(profile, dict) else "") or ""
                name = name or str(data.get("email") or "")
            label = f" ({name})" if name else ""
            self.connection_tested.emit(True, f"Connected: {account}{label} is reachable.")

        self._submit(work)

    # -- ledger ------------

    def open_ledger(self) -> None:
        """(Re)open the ledger of the current mode in a worker, for browsing while stopped."""
        url = self.config().database_url
        data_dir = self.config().data_dir

        def work() -> None:
            from gateway.ledger import Ledger

            try:
                if url.startswith("sqlite:///"):
                    data_dir.mkdir(parents=True, exist_ok=True)
                ledger = Ledger.open(url)
            except (StorageError, OSError) as exc:
                self._start_failed.emit(f"The ledger cannot be opened: {exc}")
                return
            except Exception as exc:
                log.exception("opening the ledger failed")
                self._start_failed.emit(f"The ledger cannot be opened ({type(exc).__name__}).")
                return
            self._ledger_done.emit(ledger, url)

        self._submit(work)

    @Slot(object, str)
    def on_ledger_ready(self, ledger: Ledger, url: str) -> None:
        if url != self.config().database_url or self.is_running:
            ledger.close()  # the mode changed meanwhile; a newer open is on its way
            return
        self._drop_ledger()
        self.ledger = ledger
        self._ledger_url = url
        ledger.add_listener(self._on_ledger_commit)
        self._last_version = None
        self._emit_ledger_opened()

    def _drop_ledger(self, *, wait: bool = False) -> None:
        if self.ledger is not None:
            ledger = self.ledger
            ledger.remove_listener(self._on_ledger_commit)
            reader = self.reader

            def close() -> None:
                # Reads still running on it (a COUNT, the totals) finish first.
                reader.wait_idle(15000)
                ledger.close()

            if wait:
                close()
            else:
                self._submit(close)  # never block the GUI thread on a running read
            self.ledger = None
            self._ledger_url = ""
            self._emit_ledger_opened()  # views drop the closed ledger

    def _on_ledger_commit(self) -> None:
        # Called on the WRITING thread after each commit: only emit, and at most one
        # notification in flight so a burst of writes costs one refresh.
        if not self._notify_pending.is_set():
            self._notify_pending.set()
            self._ledger_written.emit()

    @Slot()
    def on_ledger_written(self) -> None:
        self._notify_pending.clear()
        if self.ledger is None:  # queued before a shutdown: nothing to read any more
            return
        self._notified_since_poll = True
        self._emit_ledger_changed()

    @Slot()
    def on_poll_timeout(self) -> None:
        ledger = self.ledger
        if ledger is None:
            return
        # PRAGMA data_version is a read like any other: off the GUI thread.
        self.reader.submit(
            "data-version",
            ledger.data_version,
            lambda version: self._apply_data_version(ledger, version),
            lambda _message: None,  # a poll must never take the window down
        )

    def _apply_data_version(self, ledger: Ledger, version: int) -> None:
        if ledger is not self.ledger:
            return  # a version of a ledger closed since
        changed = self._last_version is not None and version != self._last_version
        self._last_version = version
        if changed and not self._notified_since_poll:
            self._emit_ledger_changed()
        self._notified_since_poll = False

    # -- start / stop ----------------------------------------------------------------

    def start(self) -> None:
        """Start the gateway in a worker; ``running_changed(True)`` or ``failed``."""
        if self.is_running or self._busy:
            return
        if not self.sandbox and not self.secrets_known:
            self.failed.emit("The secrets could not be read from the keyring yet.")
            return
        config = self.config()
        problems = [] if config.sandbox else config.problems()
        if problems:
            message = "The gateway cannot start: " + "; ".join(str(p) for p in problems)
            self.failed.emit(start_error_message(ValueError(message)))
            return
        ledger = self.ledger if self._ledger_url == config.database_url else None
        threads = self.gateway_threads
        self._set_busy(True)

        def work() -> None:
            from gateway.service import GatewayServer, open_ledger

            given = ledger
            try:
                if given is None:
                    # The controller opens it, not the service: a service closes the
                    # ledger it opened as it stops, under the window's running reads;
                    # the controller closes its ledgers once no read runs (_drop_ledger).
                    given = open_ledger(config)
                server = GatewayServer(config, ledger=given, threads=threads)
                server.start()
            except Exception as exc:
                if given is not None and given is not ledger:
                    given.close()  # opened here for this start: nobody reads it yet
                if not isinstance(exc, (ValueError, OSError, StorageError)):
                    log.exception("gateway start failed")
                self._start_failed.emit(start_error_message(exc))
                return
            self._started_done.emit(server)

        self._submit(work)

    @Slot(object)
    def on_start_succeeded(self, server: GatewayServer) -> None:
        self.server = server
        if self.ledger is not server.ledger:
            self._drop_ledger()
            self.ledger = server.ledger
            self._ledger_url = server.config.database_url
            self.ledger.add_listener(self._on_ledger_commit)
            self._emit_ledger_opened()
        self._set_busy(False)
        self.running_changed.emit(True)
        self._emit_ledger_changed()
        _freeze_long_lived()

    @Slot(str)
    def on_start_failed(self, message: str) -> None:
        self._set_busy(False)
        self.failed.emit(message)

    def stop(self) -> None:
        """Stop in a worker (in-flight requests finish); ``running_changed(False)``."""
        server = self.server
        if server is None or self._busy:
            return
        self._set_busy(True)
        # The job lets go of the server before it says so: on_stop_finished collects
        # the stopped gateway and freezes what remains, which must not include it.
        held = [server]
        del server

        def work() -> None:
            stopping = held.pop()
            try:
                stopping.stop()
            except Exception:
                log.exception("gateway stop failed")
            del stopping
            self._stopped_done.emit()

        self._submit(work)

    @Slot()
    def on_stop_finished(self) -> None:
        self.server = None
        # The stopped gateway's objects become collectable again; what lives on (the
        # window) goes back out of full collections.
        gc.unfreeze()
        _freeze_long_lived()
        self._set_busy(False)
        self.running_changed.emit(False)

    def shutdown(self) -> None:
        """Blocking stop for application exit: the gateway, the workers, the ledger."""
        self._poll.stop()
        self._changed_timer.stop()
        self._export_cancel.set()
        if self.server is not None:
            try:
                self.server.stop()
            except Exception:
                log.exception("gateway stop failed")
            self.server = None
            gc.unfreeze()
        self._pool.waitForDone(15000)
        self.reader.wait_idle(15000)
        self._drop_ledger(wait=True)

    # -- actions ------------

    def retry_transfer(self, charge_id: str) -> None:
        """Queue a failed transfer again (the service checks Stripe first); ``transfer_retried``."""
        server = self.server
        if server is None or not self.is_running:
            self.failed.emit("Start the gateway to retry a transfer.")
            return

        def work() -> None:
            try:
                ok = server.retry_transfer(charge_id)
            except StripeError as exc:
                self.failed.emit(f"Retry of {charge_id} failed: {exc}")
                return
            except Exception as exc:
                log.exception("retry transfer failed")
                self.failed.emit(f"Retry of {charge_id} failed ({type(exc).__name__}).")
                return
            self.transfer_retried.emit(charge_id, ok)

        self._submit(work)

    def simulate_payment(self, amount: int, currency: str) -> None:
        """One sandbox sale in a worker; ``payment_simulated(charge_id)`` or ``failed``."""
        server = self.server
        if server is None or not self.is_running or server.sandbox is None:
            self.failed.emit("Simulate payment needs the gateway running in Sandbox mode.")
            return

        def work() -> None:
            try:
                charge_id = server.simulate_payment(amount, currency)
            except Exception as exc:
                log.warning("simulated payment failed: %s", exc)
                self.failed.emit(f"The simulated payment failed: {exc}")
                return
            self.payment_simulated.emit(charge_id)

        self._submit(work)

    def export_csv(self, path: Path, charge_filter: ChargeFilter) -> None:
        """Write the CSV in a worker; progress, then finished/cancelled/failed."""
        ledger = self.ledger
        if ledger is None:
            self.export_failed.emit("The ledger is not open yet.")
            return
        self._export_cancel.clear()
        cancel = self._export_cancel

        def progress(rows: int) -> bool:
            self.export_progressed.emit(rows)
            return not cancel.is_set()

        def work() -> None:
            from gateway.export import ExportCancelled, export_csv

            fd, tmp_name = tempfile.mkstemp(prefix=".ursus-export-", dir=path.parent)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                    rows = export_csv(ledger, out, charge_filter, progress=progress)
                os.replace(tmp, path)
            except ExportCancelled:
                tmp.unlink(missing_ok=True)
                self.export_cancelled.emit()
                return
            except (OSError, StorageError) as exc:
                tmp.unlink(missing_ok=True)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                self.export_failed.emit(f"The export failed: {reason}")
                return
            except Exception as exc:
                tmp.unlink(missing_ok=True)
                log.exception("export failed")
                self.export_failed.emit(f"The export failed ({type(exc).__name__}).")
                return
            self.export_finished.emit(rows, str(path))

        self._submit(work)

    def cancel_export(self) -> None:
        self._export_cancel.set()

    def assert_gui_thread(self) -> None:
        assert QThread.currentThread() is self.thread(), "GUI-thread only"
