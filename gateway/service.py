"""GatewayServer: ledger, Flask app, waitress and processor, started and stopped as one."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig, Secrets
from gateway.errors import StorageError
from gateway.ledger import Ledger
from gateway.models import TransferStatus
from gateway.wsgi_server import PortInUseError, WsgiServer

if TYPE_CHECKING:
    from gateway.health import HealthProbe
    from gateway.logs import LogFiles
    from gateway.processor import Processor
    from gateway.sandbox import SandboxServer
    from gateway.stripe_api import StripeGateway

log = logging.getLogger(__name__)

__all__ = ["ConfigError", "GatewayServer", "PortInUseError", "open_ledger"]


def _ledger_place(config: GatewayConfig) -> str:
    """Where the ledger is, for a message (a database URL may hold a password: not shown)."""
    if config.settings.database_url:
        return "the database named by URSUS_DATABASE_URL"
    return f"the ledger {config.data_dir / 'ursus.sqlite3'}"


def open_ledger(config: GatewayConfig) -> Ledger:
    """Open the configured ledger, creating the data folder; StorageError says where."""
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the data folder {config.data_dir}: {exc.strerror}"
        ) from exc
    try:
        return Ledger.open(config.database_url)
    except StorageError as exc:
        raise StorageError(
            f"{_ledger_place(config)} cannot be used (is its folder writable?): {exc}"
        ) from exc


class ConfigError(ValueError):
    """The configuration is missing or malformed; the message lists every problem."""


class GatewayServer:
    """One running gateway. ``start()``/``stop()`` may be called from any one thread."""

    def __init__(
        self,
        config: GatewayConfig,
        ledger: Ledger | None = None,
        stripe: StripeGateway | None = None,
        *,
        log_files: bool = True,
        log_console: bool = False,
        threads: int = 8,
    ) -> None:
        self._config = config
        self._given_ledger = ledger
        self._given_stripe = stripe
        self._log_files = log_files
        self._log_console = log_console
        self._threads = threads
        self._lock = threading.RLock()
        self._ledger: Ledger | None = None
        self._stripe: StripeGateway | None = None
        self._health: HealthProbe | None = None
        self._processor: Processor | None = None
        self._wsgi: WsgiServer | None = None
        self._sandbox: SandboxServer | None = None
        self._logs: LogFiles | None = None
        self._effective: GatewayConfig = config
        self._catch_up: threading.Thread | None = None
        self._catch_up_stop = threading.Event()
        self.started_at: float | None = None

    # -- state -----------------------------------------------------------------

    @property
    def config(self) -> GatewayConfig:
        """The configuration in force (in sandbox mode: with the generated secrets)."""
        return self._effective

    @property
    def is_running(self) -> bool:
        return self._wsgi is not None and self._wsgi.is_running

    @property
    def port(self) -> int:
        return self._wsgi.port if self._wsgi is not None else 0

    @property
    def url(self) -> str:
        return self._wsgi.url if self._wsgi is not None else ""

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/webhook" if self.url else ""

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("the gateway is not running")
        return self._ledger

    @property
    def stripe(self) -> StripeGateway:
        if self._stripe is None:
            raise RuntimeError("the gateway is not running")
        return self._stripe

    @property
    def processor(self) -> Processor:
        if self._processor is None:
            raise RuntimeError("the gateway is not running")
        return self._processor

    @property
    def sandbox(self) -> SandboxServer | None:
        return self._sandbox

    def stripe_connected(self) -> bool | None:
        """Last known Stripe reachability; None while unknown."""
        health = self._health
        return None if health is None else health.stripe_connected

    # -- start / stop ----------------------------------------------------------

    def start(self) -> None:
        """Open the ledger, bind the port and start the processor.

        Raises ConfigError (what is missing), PortInUseError (port taken) or
        StorageError (the data dir cannot be used); nothing is left running then.
        """
        with self._lock:
            if self._wsgi is not None:
                raise RuntimeError("the gateway is already running")
            try:
                self._start()
            except BaseException:
                self._teardown()
                raise

    def _start(self) -> None:
        from gateway.app import create_app
        from gateway.health import HealthProbe
        from gateway.ingest import IngestGauge
        from gateway.processor import Processor
        from gateway.stripe_api import StripeGateway

        config = self._config
        if config.sandbox:
            config = self._start_sandbox(config)
        else:
            problems = config.problems()
            if problems:
                raise ConfigError(
                    "The gateway cannot start: " + "; ".join(str(p) for p in problems)
                )
        self._effective = config

        if self._log_files:
            from gateway.logs import setup_logging

            try:
                self._logs = setup_logging(
                    config.logs_dir, secrets=config.secrets.values, console=self._log_console
                )
            except OSError as exc:
                raise StorageError(
                    f"cannot write the log folder {config.logs_dir}: {exc.strerror or exc}"
                ) from exc

        self._ledger = self._given_ledger or open_ledger(config)

        self._stripe = self._given_stripe or StripeGateway(
            config.secrets.stripe_secret_key, api_base=config.settings.stripe_api_base
        )
        self._health = HealthProbe(self._stripe)
        # The processor gives way to a burst of webhook deliveries (gateway/ingest.py).
        ingest = IngestGauge()
        self._processor = Processor(self._ledger, self._stripe, config, ingest=ingest)
        app = create_app(
            config,
            self._ledger,
            self._stripe,
            self._health,
            on_event=self._processor.wake,
            ingest=ingest,
        )
        wsgi = WsgiServer(
            app,
            config.settings.host,
            config.settings.port,
            threads=self._threads,
            name="gateway",
            max_request_body_size=max(config.settings.webhook_body_limit, 1 << 20),
        )
        wsgi.start()
        self._wsgi = wsgi
        if self._sandbox is not None:
            self._sandbox.webhook_url = self.webhook_url
        self._health.start()
        self._processor.start()
        self._start_catch_up()
        self.started_at = time.time()
        log.info(
            "gateway started on %s (mode %s, data %s)",
            wsgi.url,
            config.mode,
            config.data_dir,
        )

    def _start_catch_up(self) -> None:
        """List events Stripe could not deliver while we were down, off the start path."""
        ledger, stripe, processor = self._ledger, self._stripe, self._processor
        assert ledger is not None and stripe is not None and processor is not None
        stop = self._catch_up_stop = threading.Event()

        def run() -> None:
            from gateway.catchup import catch_up
            from gateway.errors import StripeError

            try:
                result = catch_up(ledger, stripe, stop=stop)
            except StripeError as exc:
                # Not fatal: Stripe still retries those deliveries for 3 days.
                log.warning("catch-up of missed events failed: %s", exc)
                return
            except StorageError as exc:
                log.error("catch-up could not store events: %s", exc)
                return
            except Exception:  # a bug here must not take the running gateway down
                log.exception("catch-up of missed events failed")
                return
            if result.recorded:
                processor.wake()

        self._catch_up = threading.Thread(target=run, name="gateway-catchup", daemon=True)
        self._catch_up.start()

    def _start_sandbox(self, config: GatewayConfig) -> GatewayConfig:
        from gateway.sandbox import SandboxServer

        sandbox = SandboxServer.generated()
        sandbox.start()
        self._sandbox = sandbox
        secrets = Secrets(
            stripe_secret_key=sandbox.secret_key,
            webhook_secrets=(sandbox.webhook_secret,),
            connected_account_id=sandbox.connected_account_id,
            api_keys=("sandbox-" + uuid.uuid4().hex,),
        )
        # The sandbox charges settle at once: no reason to wait for a fee.
        settings = dataclasses.replace(config.settings, stripe_api_base=sandbox.url)
        return dataclasses.replace(config, secrets=secrets, settings=settings)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, finish in-flight requests and the current transfer, close."""
        with self._lock:
            if self._wsgi is None and self._ledger is None and self._sandbox is None:
                return
            log.info("gateway stopping")
            self._teardown(timeout)

    def _teardown(self, timeout: float = 10.0) -> None:
        # Order matters: no new requests, then no new work, then close storage.
        if self._wsgi is not None:
            self._wsgi.stop(timeout)
            self._wsgi = None
        if self._catch_up is not None:
            self._catch_up_stop.set()
            self._catch_up.join(timeout)
            self._catch_up = None
        if self._processor is not None:
            self._processor.stop(timeout)
            self._processor = None
        if self._health is not None:
            self._health.stop()
            self._health = None
        if self._sandbox is not None:
            self._sandbox.stop()
            self._sandbox = None
        if self._ledger is not None and self._ledger is not self._given_ledger:
            self._ledger.close()
        self._ledger = None
        self._stripe = None
        if self._logs is not None:
            self._logs.teardown()
            self._logs = None
        self.started_at = None

    # -- actions ---------------------------------------------------------------

    def retry_transfer(self, charge_id: str) -> bool:
        """Queue a failed transfer again (after checking Stripe has none). Blocking."""
        from gateway.processor import retry_transfer

        result = retry_transfer(self.ledger, self.stripe, charge_id)
        self.processor.wake()
        return bool(result)

    def simulate_payment(
        self, amount: int, currency: str = "usd", order_id: str | None = None
    ) -> str:
        """Drive one sale through the sandbox like a customer would; returns the charge id.

        Blocking (HTTP round trips): call it off the GUI thread.
        """
        from gateway.sandbox.simulate import simulate_payment

        if self._sandbox is None:
            raise RuntimeError("Simulate payment needs the gateway running in sandbox mode")
        sale = simulate_payment(
            self.url,
            self.config.secrets.api_keys[0],
            self._sandbox,
            self.config.secrets.stripe_secret_key,
            amount,
            currency,
            order_id,
        )
        return sale.charge_id

    def wait_for_transfer(self, charge_id: str, timeout: float = 10.0) -> TransferStatus:
        """Wait until the charge's transfer left PENDING/NONE (or the timeout); for CLI/selftest."""
        done = threading.Event()

        def changed() -> None:
            done.set()

        ledger = self.ledger
        ledger.add_listener(changed)
        try:
            deadline = time.monotonic() + timeout
            while True:
                view = ledger.get_charge(charge_id)
                status = view.transfer_status if view else TransferStatus.NONE
                if status not in (TransferStatus.NONE, TransferStatus.PENDING):
                    return status
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return status
                done.wait(min(remaining, 0.5))
                done.clear()
        finally:
            ledger.remove_listener(changed)
