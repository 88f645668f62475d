"""Fixtures for the sandbox tests: a running sandbox, a stripe client, a webhook receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import stripe
from flask import Flask, Response, request

from gateway.sandbox import SandboxServer
from gateway.wsgi_server import WsgiServer


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer.generated(retry_delays=(0.01, 0.02, 0.05), seed=1234) as sb:
        yield sb


@pytest.fixture
def client(sandbox: SandboxServer) -> stripe.StripeClient:
    return sandbox.stripe_client(max_network_retries=2)


@dataclass
class Receiver:
    """A loopback webhook endpoint; answers ``statuses`` in turn, then 200."""

    server: WsgiServer
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[bytes, str]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"{self.server.url}/webhook"

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.received) >= count, timeout)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    app = Flask("receiver")
    rec = Receiver(server=WsgiServer(app, "127.0.0.1", 0, threads=2, name="receiver"))

    @app.post("/webhook")
    def webhook() -> Response:
        with rec.cond:
            rec.received.append((request.get_data(), request.headers.get("Stripe-Signature", "")))
            status = rec.statuses.pop(0) if rec.statuses else 200
            rec.cond.notify_all()
        return Response("{}", status=status, mimetype="application/json")

    rec.server.start()
    try:
        yield rec
    finally:
        rec.server.stop()


@pytest.fixture
def pay(client: stripe.StripeClient):  # type: ignore[no-untyped-def]
    """Create and confirm a card PaymentIntent like URSUS + a customer would."""

    def _pay(amount: int = 10000, order: str = "o-1", **extra: object) -> stripe.PaymentIntent:
        pi = client.v1.payment_intents.create(
            params={
                "amount": amount,
                "currency": "usd",
                "metadata": {"order_id": order},
                "transfer_group": order,
                "automatic_payment_methods": {"enabled": True},
                **extra,  # type: ignore[typeddict-item]
            }
        )
        return client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})

    return _pay
