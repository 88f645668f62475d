"""The sandbox's API through the real stripe client: sales, capture, refunds, transfers."""

from __future__ import annotations

import pytest
import stripe
from stripe_contract import problems

from gateway.sandbox import SandboxServer


def test_full_sale_matches_stripe_and_the_contract(sandbox: SandboxServer, client, pay) -> None:
    pi = pay(10000, "order-42")
    assert pi.status == "succeeded" and pi.amount_received == 10000
    charge = client.v1.charges.retrieve(
        pi.latest_charge, params={"expand": ["balance_transaction"]}
    )
    assert charge.paid and charge.captured and not charge.livemode
    assert charge.payment_intent == pi.id and charge.transfer_group == "order-42"
    assert charge.metadata["order_id"] == "order-42"
    txn = charge.balance_transaction
    assert (txn.amount, txn.fee, txn.net, txn.source) == (10000, 320, 9680, charge.id)
    plain = client.v1.charges.retrieve(charge.id)
    assert plain.balance_transaction == txn.id  # an id string unless expanded
    assert client.v1.balance_transactions.retrieve(txn.id).fee == 320

    tr = client.v1.transfers.create(
        params={
            "amount": 9583,
            "currency": "usd",
            "destination": sandbox.connected_account_id,
            "source_transaction": charge.id,
            "transfer_group": "order-42",
            "metadata": {"charge_id": charge.id},
        },
        options={"idempotency_key": f"ursus-transfer-{charge.id}"},
    )
    assert tr.destination == sandbox.connected_account_id and tr.amount == 9583
    assert client.v1.transfers.retrieve(tr.id).source_transaction == charge.id
    listed = client.v1.transfers.list(params={"transfer_group": "order-42", "limit": 5})
    assert [t.id for t in listed.data] == [tr.id]
    assert (
        client.v1.accounts.retrieve(sandbox.connected_account_id).id == sandbox.connected_account_id
    )
    client.v1.balance.retrieve()

    types = [e["type"] for e in reversed(sandbox.state.events)]
    assert types[::-1][:5] == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "charge.updated",
        "transfer.created",
    ]
    succeeded = next(e for e in sandbox.state.events if e["type"] == "charge.succeeded")
    updated = next(e for e in sandbox.state.events if e["type"] == "charge.updated")
    assert succeeded["data"]["object"]["balance_transaction"] is None
    assert updated["data"]["object"]["balance_transaction"] == txn.id
    assert updated["data"]["previous_attributes"] == {"balance_transaction": None}

    assert len(sandbox.state.requests) == 10
    assert problems(sandbox.state.requests) == []


def test_contract_reports_made_up_parameters_and_paths(sandbox: SandboxServer) -> None:
    import requests

    resp = requests.get(
        f"{sandbox.url}/v1/charges/ch_nope",
        params={"frobnicate": "1"},
        headers={"Authorization": f"Bearer {sandbox.secret_key}"},
        timeout=5,
    )
    assert resp.status_code == 400
    found = problems(sandbox.state.requests)
    assert found == ["GET /v1/charges/{charge}: unknown parameter 'frobnicate'"]
    assert problems([("POST", "/v1/charges/ch_1/frob", ())]) == [
        "POST /v1/charges/ch_1/frob: path not in Stripe's spec"
    ]
    assert problems([{"method": "DELETE", "path": "/v1/transfers", "params": []}]) == [
        "DELETE /v1/transfers: method not allowed on /v1/transfers"
    ]


def test_manual_capture(sandbox: SandboxServer, client) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 5000,
            "currency": "usd",
            "capture_method": "manual",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    assert pi.status == "requires_capture" and pi.amount_capturable == 5000
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert not charge.captured and charge.balance_transaction is None
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.transfers.create(
            params={
                "amount": 100,
                "currency": "usd",
                "destination": sandbox.connected_account_id,
                "source_transaction": charge.id,
            }
        )
    assert err.value.param == "source_transaction"

    captured = client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 4000})
    assert captured.status == "succeeded" and captured.amount_received == 4000
    charge = client.v1.charges.retrieve(charge.id, params={"expand": ["balance_transaction"]})
    assert charge.captured and charge.amount_captured == 4000 and charge.amount_refunded == 1000
    assert charge.balance_transaction.fee == 146  # 2.9% of 4000 + 30
    types = [e["type"] for e in sandbox.state.events]
    assert types.index("charge.captured") < types.index("charge.updated")
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.payment_intents.capture(pi.id)
    assert again.value.code == "payment_intent_unexpected_state"


def test_refunds_update_the_charge_and_emit_charge_refunded(
    sandbox: SandboxServer, client, pay
) -> None:
    pi = pay(2000)
    refund = client.v1.refunds.create(params={"charge": pi.latest_charge, "amount": 500})
    assert refund.status == "succeeded" and refund.amount == 500
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (500, False)
    client.v1.refunds.create(params={"payment_intent": pi.id})
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (2000, True)
    events = [e for e in sandbox.state.events if e["type"] == "charge.refunded"]
    assert [e["data"]["object"]["amount_refunded"] for e in events] == [500, 2000]
    assert events[1]["data"]["previous_attributes"] == {"amount_refunded": 500, "refunded": False}
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.refunds.create(params={"charge": pi.latest_charge})
    assert err.value.code == "charge_already_refunded"


def test_balance_rule_and_source_transaction_limits(sandbox: SandboxServer, client, pay) -> None:
    pi = pay(10000)
    acct = sandbox.connected_account_id
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.transfers.create(params={"amount": 9583, "currency": "usd", "destination": acct})
    assert err.value.code == "balance_insufficient"  # card funds are still pending
    tr = client.v1.transfers.create(
        params={
            "amount": 9583,
            "currency": "usd",
            "destination": acct,
            "source_transaction": pi.latest_charge,
        }
    )
    assert tr.amount == 9583
    with pytest.raises(stripe.InvalidRequestError) as over:
        client.v1.transfers.create(
            params={
                "amount": 418,
                "currency": "usd",
                "destination": acct,
                "source_transaction": pi.latest_charge,
            }
        )
    assert over.value.param == "amount"
    with pytest.raises(stripe.InvalidRequestError) as dest:
        client.v1.transfers.create(
            params={
                "amount": 1,
                "currency": "usd",
                "destination": "acct_someoneelse",
                "source_transaction": pi.latest_charge,
            }
        )
    assert dest.value.param == "destination"
    sandbox.state.make_available()
    assert client.v1.balance.retrieve().available[0].amount == 9680 - 9583
    client.v1.transfers.create(params={"amount": 97, "currency": "usd", "destination": acct})
    reversal = client.v1.transfers.reversals.create(tr.id, params={"amount": 1000})
    assert reversal.amount == 1000 and reversal.transfer == tr.id
    tr = client.v1.transfers.retrieve(tr.id)
    assert (tr.amount_reversed, tr.reversed) == (1000, False)
    client.v1.transfers.reversals.create(tr.id)
    assert client.v1.transfers.retrieve(tr.id).reversed
    reversed_events = [e for e in sandbox.state.events if e["type"] == "transfer.reversed"]
    assert len(reversed_events) == 2


def test_fee_overrides_make_the_actual_fee_differ(sandbox: SandboxServer, client, pay) -> None:
    by_meta = pay(10000, metadata={"order_id": "a", "sandbox_fee": "999"})
    sandbox.state.override_next_fee(111)
    by_api = pay(10000)
    for pi, fee in ((by_meta, 999), (by_api, 111)):
        charge = client.v1.charges.retrieve(
            pi.latest_charge, params={"expand": ["balance_transaction"]}
        )
        assert charge.balance_transaction.fee == fee


def test_held_balance_transactions_arrive_later(sandbox: SandboxServer, client, pay) -> None:
    sandbox.state.hold_balance_transactions = True
    pi = pay(10000)
    assert client.v1.charges.retrieve(pi.latest_charge).balance_transaction is None
    assert not any(e["type"] == "charge.updated" for e in sandbox.state.events)
    assert sandbox.state.release_balance_transactions() == 1
    assert client.v1.charges.retrieve(pi.latest_charge).balance_transaction.startswith("txn_")
    assert sandbox.state.events[-1]["type"] == "charge.updated"


def test_declined_card(sandbox: SandboxServer, client) -> None:
    pi = client.v1.payment_intents.create(params={"amount": 1000, "currency": "usd"})
    with pytest.raises(stripe.CardError) as err:
        client.v1.payment_intents.confirm(
            pi.id, params={"payment_method": "pm_card_chargeDeclined"}
        )
    assert err.value.code == "card_declined"
    assert client.v1.payment_intents.retrieve(pi.id).status == "requires_payment_method"
    assert sandbox.state.events[-1]["type"] == "payment_intent.payment_failed"
