"""Events Stripe could not deliver while the gateway was down are caught up at start."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe_contract  # tests/stripe_contract.py (pytest pythonpath)

from gateway.catchup import catch_up
from gateway.config import GatewayConfig, Secrets, Settings
from gateway.ledger import Ledger
from gateway.models import TransferStatus
from gateway.sandbox import SandboxServer
from gateway.service import GatewayServer
from gateway.stripe_api import StripeGateway


def dead_url() -> str:
    """A loopback URL where nothing listens (the gateway is 'closed')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/webhook"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    sb = SandboxServer.generated(retry_delays=(0.01,), seed=3)
    sb.webhook_url = dead_url()
    sb.start()
    yield sb
    sb.stop()


def pay_while_closed(sandbox: SandboxServer, amount: int, order: str) -> str:
    client = sandbox.stripe_client(max_network_retries=0)
    intent = client.v1.payment_intents.create(
        {
            "amount": amount,
            "currency": "usd",
            "metadata": {"order_id": order},
            "transfer_group": order,
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    assert sandbox.wait_idle(5)  # every delivery attempt failed
    return str(client.v1.payment_intents.retrieve(intent.id).latest_charge)


def test_a_sale_made_while_closed_is_paid_out_at_the_next_start(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    charge_id = pay_while_closed(sandbox, 10000, "missed-1")
    config = GatewayConfig(
        secrets=Secrets(
            stripe_secret_key=sandbox.secret_key,
            webhook_secrets=(sandbox.webhook_secret,),
            connected_account_id=sandbox.connected_account_id,
            api_keys=("catch-up-api-key-0123456789",),
        ),
        settings=Settings(port=0, stripe_api_base=sandbox.url),
        data_dir=tmp_path,
        log_dir=tmp_path / "logs",
    )
    server = GatewayServer(config)
    server.start()
    try:
        assert server.wait_for_transfer(charge_id) == TransferStatus.CREATED
        view = server.ledger.get_charge(charge_id)
        assert view is not None and view.transfer_amount == 9583
    finally:
        server.stop()
    assert len(sandbox.state.transfers) == 1
    assert stripe_contract.problems(sandbox.state.requests) == []


def test_catch_up_is_idempotent_and_skips_other_types(
    sandbox: SandboxServer, ledger: Ledger
) -> None:
    pay_while_closed(sandbox, 2000, "missed-2")
    gw = StripeGateway(sandbox.secret_key, api_base=sandbox.url)
    first = catch_up(ledger, gw)
    assert first.complete and first.recorded == first.listed >= 2  # succeeded + updated
    again = catch_up(ledger, gw)
    assert again.listed == first.listed and again.recorded == 0
    types = {e.type for e in ledger.pending_events(100, now=10**10)}
    assert types <= {"charge.succeeded", "charge.updated", "charge.captured", "charge.refunded"}
    assert "charge.succeeded" in types
