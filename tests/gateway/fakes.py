"""Test doubles for the web app: an in-memory ledger inbox and a scripted Stripe."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events import WEBHOOK_SECRET

from gateway.config import GatewayConfig, Secrets, Settings
from gateway.models import Counts


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event_id: str
    type: str
    created: int
    livemode: bool
    object_id: str
    raw: bytes


class FakeLedger:
    """``record_event``/``counts`` like Ledger; ``fail_with`` makes the next writes raise."""

    def __init__(self) -> None:
        self.events: dict[str, StoredEvent] = {}
        self.fail_with: BaseException | None = None
        self.counts_fail_with: BaseException | None = None
        self.record_calls = 0
        self._lock = threading.Lock()

    def record_event(
        self,
        event_id: str,
        type: str,
        created: int,
        livemode: bool,
        object_id: str,
        raw: bytes,
    ) -> bool:
        with self._lock:
            self.record_calls += 1
            if self.fail_with is not None:
                raise self.fail_with
            if event_id in self.events:
                return False
            self.events[event_id] = StoredEvent(event_id, type, created, livemode, object_id, raw)
            return True

    def counts(self) -> Counts:
        if self.counts_fail_with is not None:
            raise self.counts_fail_with
        return Counts(
            charges=0, pending_transfers=0, failed_transfers=0, pending_events=len(self.events)
        )


@dataclass
class FakeStripe:
    """StripeGateway's ``create_payment_intent`` and ``ping``, recording calls."""

    connected: bool = True
    error: BaseException | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    pings: int = 0

    def create_payment_intent(
        self,
        amount: int,
        currency: str,
        order_id: str,
        email: str,
        description: str,
        idempotency_key: str,
    ) -> tuple[str, str]:
        self.calls.append(
            {
                "amount": amount,
                "currency": currency,
                "order_id": order_id,
                "email": email,
                "description": description,
                "idempotency_key": idempotency_key,
            }
        )
        if self.error is not None:
            raise self.error
        n = len(self.calls)
        return f"pi_test_{n:04d}", f"pi_test_{n:04d}_secret_abc{n}"

    def ping(self) -> bool:
        self.pings += 1
        if self.error is not None and not isinstance(self.error, Exception):
            raise self.error
        return self.connected


API_KEY = "ursus_test_api_key_0001"
OLD_API_KEY = "ursus_test_api_key_old_0002"
STRIPE_KEY = "sk_test_51FakeKeyForUrsusTests0123456789"
ACCOUNT = "acct_test1234567890"


def make_config(
    *,
    api_keys: tuple[str, ...] = (API_KEY,),
    webhook_secrets: tuple[str, ...] | None = None,
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1"),
    webhook_body_limit: int = 512 * 1024,
    data_dir: Path = Path("/nonexistent/ursus-test"),
) -> GatewayConfig:
    """A complete test-mode configuration with fake secrets."""
    return GatewayConfig(
        secrets=Secrets(
            stripe_secret_key=STRIPE_KEY,
            webhook_secrets=(WEBHOOK_SECRET,) if webhook_secrets is None else webhook_secrets,
            connected_account_id=ACCOUNT,
            api_keys=api_keys,
        ),
        settings=Settings(trusted_proxies=trusted_proxies, webhook_body_limit=webhook_body_limit),
        data_dir=data_dir,
        log_dir=data_dir / "logs",
    )
