"""``SandboxServer``: the offline Stripe simulator on a loopback port."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from gateway.fees import FeeSchedule
from gateway.sandbox.app import SandboxMiddleware, create_app
from gateway.sandbox.faults import FaultPlan
from gateway.sandbox.state import SandboxState
from gateway.sandbox.webhooks import DEFAULT_RETRY_DELAYS, WebhookDispatcher
from gateway.wsgi_server import WsgiServer


def _fake(prefix: str, n: int = 16) -> str:
    return prefix + secrets.token_hex(n // 2)


class SandboxServer:
    """A stateful fake Stripe API (+ webhook sender) served on ``host:port``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        secret_key: str | None = None,
        webhook_secret: str | None = None,
        connected_account_id: str | None = None,
        webhook_url: str | None = None,
        *,
        fee_schedule: FeeSchedule | None = None,
        faults: FaultPlan | None = None,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        deliver_twice: bool = False,
        shuffle_webhooks: bool = False,
        seed: int | None = None,
        threads: int = 8,
    ) -> None:
        self.secret_key = secret_key or _fake("sk_test_sandbox_", 24)
        self.webhook_secret = webhook_secret or _fake("whsec_test_sandbox_", 32)
        self.connected_account_id = connected_account_id or _fake("acct_sandbox", 8)
        self.state = SandboxState(
            self.secret_key,
            self.connected_account_id,
            fee_schedule=fee_schedule,
            webhook_url=webhook_url,
        )
        self.faults = faults or FaultPlan(seed)
        self.webhooks = WebhookDispatcher(
            self.state,
            self.webhook_secret,
            retry_delays=retry_delays,
            deliver_twice=deliver_twice,
            shuffle=shuffle_webhooks,
            seed=seed,
        )
        self.state.event_listeners.append(self.webhooks.on_event)
        self.app = create_app(self.state)
        self._server = WsgiServer(
            SandboxMiddleware(self.app, self.state, self.faults),
            host,
            port,
            threads=threads,
            name="sandbox",
        )

    @classmethod
    def generated(cls, **kwargs: Any) -> SandboxServer:
        """A sandbox with fresh random, obviously fake secrets."""
        return cls(
            secret_key=_fake("sk_test_sandbox_", 24),
            webhook_secret=_fake("whsec_test_sandbox_", 32),
            connected_account_id=_fake("acct_sandbox", 8),
            **kwargs,
        )

    # --------------------------------------------------------------- lifecycle
    def start(self) -> SandboxServer:
        """Bind and serve; raises gateway.wsgi_server.PortInUseError if taken."""
        self.webhooks.start()
        try:
            self._server.start()
        except BaseException:
            self.webhooks.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and delivering; every thread is joined."""
        self._server.stop(timeout)
        self.webhooks.stop(timeout)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------- properties
    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def is_running(self) -> bool:
        return self._server.is_running

    @property
    def webhook_url(self) -> str | None:
        return self.state.webhook_url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        self.state.webhook_url = url

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """True once every queued webhook delivery (incl. retries) has finished."""
        return self.webhooks.wait_idle(timeout)

    def stripe_client(self, max_network_retries: int = 2) -> Any:
        """A ``stripe.StripeClient`` configured for this sandbox (as URSUS builds it)."""
        import stripe

        return stripe.StripeClient(
            self.secret_key,
            base_addresses={"api": self.url},
            http_client=stripe.RequestsClient(timeout=(5, 30)),
            max_network_retries=max_network_retries,
        )
