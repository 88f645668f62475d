"""The real StripeGateway + Processor against the offline sandbox (a Stripe-compatible server).

The sandbox checks every parameter against Stripe's spec, enforces the
source_transaction budget and idempotency keys, and injects network faults;
its emitted events are fed to the ledger's inbox as the webhook would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig, Secrets, Settings
from gateway.errors import PermanentStripeError
from gateway.fees import FeeSource
from gateway.ledger import Ledger
from gateway.models import TransferStatus
from gateway.processor import Processor
from gateway.sandbox import SandboxServer
from gateway.sandbox.faults import FaultKind
from gateway.stripe_api import StripeGateway


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer.generated(retry_delays=(0.01,), seed=7) as sb:
        yield sb


@pytest.fixture
def gateway(sandbox: SandboxServer) -> Iterator[StripeGateway]:
    # No client-level retries: the processor's own retry path is what is tested.
    gw = StripeGateway(sandbox.secret_key, api_base=sandbox.url, max_network_retries=0)
    try:
        yield gw
    finally:
        gw.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger.open(f"sqlite:///{tmp_path}/l.sqlite3")
    try:
        yield led
    finally:
        led.close()


def make_config(sandbox: SandboxServer, tmp_path: Path, **settings: Any) -> GatewayConfig:
    secrets = Secrets(
        stripe_secret_key=sandbox.secret_key,
        webhook_secrets=(sandbox.webhook_secret,),
        connected_account_id=sandbox.connected_account_id,
        api_keys=("k" * 20,),
    )
    return GatewayConfig(
        secrets=secrets,
        settings=Settings(stripe_api_base=sandbox.url, **settings),
        data_dir=tmp_path,
        sandbox=True,
    )


class Inbox:
    """Moves the sandbox's emitted events into the ledger, as the webhook would."""

    def __init__(self, sandbox: SandboxServer, ledger: Ledger) -> None:
        self.sandbox = sandbox
        self.ledger = ledger
        self.done = 0

    def pump(self) -> int:
        with self.sandbox.state.lock:
            new = list(self.sandbox.state.events[self.done :])
        self.done += len(new)
        for event in new:
            obj = event["data"]["object"]
            self.ledger.record_event(
                event["id"],
                event["type"],
                event["created"],
                event["livemode"],
                obj.get("id", ""),
                json.dumps(event).encode(),
            )
        return len(new)


def sale(gw: StripeGateway, sandbox: SandboxServer, amount: int, order: str) -> str:
    """A customer pays a PaymentIntent URSUS created; returns the charge id."""
    pi_id, secret = gw.create_payment_intent(amount, "usd", order, "", "", f"ursus-pi-{order}")
    assert secret.startswith(pi_id)
    client = sandbox.stripe_client()
    pi = client.v1.payment_intents.confirm(pi_id, params={"payment_method": "pm_card_visa"})
    return str(pi.latest_charge)


def test_sale_to_transfer_through_the_sandbox(
    sandbox: SandboxServer, gateway: StripeGateway, ledger: Ledger, tmp_path: Path
) -> None:
    sandbox.state.override_next_fee(350)
    ch = sale(gateway, sandbox, 10000, "order-s1")
    inbox = Inbox(sandbox, ledger)
    assert inbox.pump() >= 2
    proc = Processor(ledger, gateway, make_config(sandbox, tmp_path))
    proc.run_once()

    view = ledger.get_charge(ch)
    assert view is not None
    assert (view.transfer_status, view.fee_source) == (TransferStatus.CREATED, FeeSource.ACTUAL)
    assert (view.stripe_fee, view.commission, view.transfer_amount) == (350, 97, 9553)
    tr = sandbox.state.transfer(view.transfer_id)
    assert tr["amount"] == 9553 and tr["currency"] == "usd"
    assert tr["destination"] == sandbox.connected_account_id
    assert (tr["source_transaction"], tr["transfer_group"]) == (ch, "order-s1")
    assert tr["metadata"]["charge_id"] == ch and tr["metadata"]["order_id"] == "order-s1"
    assert gateway.find_transfer("order-s1", ch) == view.transfer_id
    assert gateway.find_transfer("order-s1", "ch_other") is None

    inbox.pump()  # transfer.created etc.: ignored
    proc.run_once()
    assert len([t for t in sandbox.state.transfers.values() if t["source_transaction"] == ch]) == 1


def test_async_fee_arrives_with_charge_updated(
    sandbox: SandboxServer, gateway: StripeGateway, ledger: Ledger, tmp_path: Path
) -> None:
    sandbox.state.hold_balance_transactions = True
    ch = sale(gateway, sandbox, 10000, "order-s2")
    assert gateway.retrieve_charge(ch).actual_fee is None  # null balance transaction
    inbox = Inbox(sandbox, ledger)
    inbox.pump()
    proc = Processor(ledger, gateway, make_config(sandbox, tmp_path))
    proc.run_once()
    view = ledger.get_charge(ch)
    assert view is not None and view.transfer_status is TransferStatus.NONE

    assert sandbox.state.release_balance_transactions() == 1
    inbox.pump()
    proc.run_once()
    view = ledger.get_charge(ch)
    assert view is not None and view.transfer_status is TransferStatus.CREATED
    assert view.fee_source is FeeSource.ACTUAL and view.stripe_fee == 320


def test_lost_answer_is_found_not_paid_twice(
    sandbox: SandboxServer, gateway: StripeGateway, ledger: Ledger, tmp_path: Path
) -> None:
    ch = sale(gateway, sandbox, 10000, "order-s3")
    Inbox(sandbox, ledger).pump()
    # The transfer is made at the sandbox, then the connection drops before the answer.
    sandbox.faults.fail_next("/v1/transfers", FaultKind.RESET_AFTER, method="POST")
    clock = [1e9]
    proc = Processor(ledger, gateway, make_config(sandbox, tmp_path), lambda: clock[0])
    proc.run_once()
    view = ledger.get_charge(ch)
    assert view is not None and view.transfer_status is TransferStatus.PENDING
    clock[0] += 60
    proc.run_once()
    view = ledger.get_charge(ch)
    assert view is not None and view.transfer_status is TransferStatus.CREATED
    made = [t for t in sandbox.state.transfers.values() if t["source_transaction"] == ch]
    assert [t["id"] for t in made] == [view.transfer_id]


def test_refund_and_reversal_through_the_sandbox(
    sandbox: SandboxServer, gateway: StripeGateway, ledger: Ledger, tmp_path: Path
) -> None:
    ch = sale(gateway, sandbox, 10000, "order-s4")
    inbox = Inbox(sandbox, ledger)
    inbox.pump()
    proc = Processor(
        ledger, gateway, make_config(sandbox, tmp_path, reverse_transfer_on_refund=True)
    )
    proc.run_once()
    sandbox.stripe_client().v1.refunds.create(params={"charge": ch, "amount": 2500})
    inbox.pump()
    proc.run_once()
    view = ledger.get_charge(ch)
    assert view is not None and view.amount_refunded == 2500
    [refund] = gateway.list_refunds(ch)
    assert refund.amount == 2500
    reversals = gateway.list_reversals(view.transfer_id)
    assert [r.amount for r in reversals] == [2396]  # 9583 * 25%, half up
    assert sandbox.state.transfer(view.transfer_id)["amount_reversed"] == 2396


def test_account_ping_and_refusals(sandbox: SandboxServer, gateway: StripeGateway) -> None:
    info = gateway.retrieve_account(sandbox.connected_account_id)
    assert info["id"] == sandbox.connected_account_id
    assert isinstance(info["charges_enabled"], bool)
    assert gateway.ping() is True
    with pytest.raises(PermanentStripeError) as missing:
        gateway.retrieve_charge("ch_doesnotexist")
    assert missing.value.code == "resource_missing" and missing.value.status == 404
    bad = StripeGateway("sk_test_wrongwrongwrong123", api_base=sandbox.url)
    with pytest.raises(PermanentStripeError) as auth:
        bad.retrieve_charge("ch_x")
    assert auth.value.status == 401
    assert "wrongwrong" not in str(auth.value)
    assert bad.ping() is False
    bad.close()
