"""End to end over real HTTP: waitress-served gateway + a Stripe-compatible server on loopback.

A sale is created through ``POST /create-payment-intent``, paid at the Stripe
stand-in (the sandbox), whose signed webhooks reach ``POST /webhook``; the
processor then creates exactly one transfer with the parameters DESIGN §2 names.
Every request URSUS sent is checked against Stripe's OpenAPI spec.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import stripe_contract  # tests/stripe_contract.py (pytest pythonpath)

from gateway.config import GatewayConfig, Secrets, Settings
from gateway.models import TransferStatus
from gateway.sandbox import SandboxServer
from gateway.sandbox.simulate import simulate_payment
from gateway.sandbox.webhooks import sign
from gateway.service import GatewayServer

API_KEY = "test-api-key-0123456789abcdef"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    sb = SandboxServer.generated(retry_delays=(0.01, 0.02, 0.05), seed=7)
    sb.start()
    yield sb
    sb.stop()


@pytest.fixture
def gateway(sandbox: SandboxServer, tmp_path: Path) -> Iterator[GatewayServer]:
    config = GatewayConfig(
        secrets=Secrets(
            stripe_secret_key=sandbox.secret_key,
            webhook_secrets=("whsec_test_oldsecretrotatedout", sandbox.webhook_secret),
            connected_account_id=sandbox.connected_account_id,
            api_keys=(API_KEY,),
        ),
        settings=Settings(port=0, stripe_api_base=sandbox.url),
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
    )
    server = GatewayServer(config)
    server.start()
    yield server
    server.stop()


def transfers_at_stripe(sandbox: SandboxServer) -> list[dict]:
    return list(sandbox.state.transfers.values())


def test_a_sale_flows_from_intent_to_exactly_one_transfer(
    sandbox: SandboxServer, gateway: GatewayServer
) -> None:
    sandbox.webhook_url = gateway.webhook_url
    sale = simulate_payment(
        gateway.url, API_KEY, sandbox, sandbox.secret_key, 10000, "usd", "order-e2e-1"
    )

    assert gateway.wait_for_transfer(sale.charge_id) == TransferStatus.CREATED
    view = gateway.ledger.get_charge(sale.charge_id)
    assert view is not None
    assert (view.gross, view.stripe_fee, view.commission, view.transfer_amount) == (
        10000,
        320,
        97,
        9583,
    )
    assert view.order_id == "order-e2e-1"

    assert sandbox.wait_idle(5)
    [transfer] = transfers_at_stripe(sandbox)
    assert transfer["id"] == view.transfer_id
    assert transfer["amount"] == 9583
    assert transfer["currency"] == "usd"
    assert transfer["destination"] == sandbox.connected_account_id
    assert transfer["source_transaction"] == sale.charge_id
    assert transfer["transfer_group"] == "order-e2e-1"
    assert transfer["metadata"]["charge_id"] == sale.charge_id
    assert transfer["metadata"]["order_id"] == "order-e2e-1"
    keys = [
        r.idempotency_key
        for r in sandbox.state.requests
        if r.method == "POST" and r.path == "/v1/transfers"
    ]
    assert keys and set(keys) == {f"ursus-transfer-{sale.charge_id}"}

    # Every request URSUS made names only paths and parameters Stripe defines.
    assert stripe_contract.problems(sandbox.state.requests) == []


def test_replayed_and_reordered_events_pay_once(
    sandbox: SandboxServer, gateway: GatewayServer
) -> None:
    """Deliver every event of a sale ourselves, newest first and each three times."""
    sale = simulate_payment(gateway.url, API_KEY, sandbox, sandbox.secret_key, 2500, "usd")
    events = [json.dumps(e) for e in reversed(sandbox.state.events)]
    assert any('"charge.succeeded"' in e for e in events)

    for _ in range(3):
        for body in events:
            response = requests.post(
                gateway.webhook_url,
                data=body.encode(),
                headers={
                    "Stripe-Signature": sign(body, sandbox.webhook_secret),
                    "Content-Type": "application/json",
                },
                timeout=5,
            )
            assert response.status_code == 200, response.text

    assert gateway.wait_for_transfer(sale.charge_id) == TransferStatus.CREATED
    assert wait_until(lambda: gateway.ledger.counts().pending_events == 0)
    assert len(transfers_at_stripe(sandbox)) == 1
    assert gateway.ledger.counts().charges == 1


def test_bad_signature_over_http_is_400_and_nothing_stored(
    sandbox: SandboxServer, gateway: GatewayServer
) -> None:
    body = json.dumps({"id": "evt_forged", "type": "charge.succeeded", "data": {}})
    response = requests.post(
        gateway.webhook_url,
        data=body,
        headers={"Stripe-Signature": sign(body, "whsec_test_notthesecret")},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert gateway.ledger.counts().pending_events == 0
    assert gateway.ledger.event_counts() == {} or sum(gateway.ledger.event_counts().values()) == 0
