"""Signed webhook delivery: signature, retries, duplicates, shuffling."""

from __future__ import annotations

import json
import socket

import pytest
import stripe

from gateway.sandbox import SandboxServer
from gateway.sandbox.webhooks import sign


def test_deliveries_verify_with_stripe(sandbox: SandboxServer, pay, receiver) -> None:
    sandbox.webhook_url = receiver.url
    pay(10000, "o-sig")
    assert sandbox.wait_idle(5)
    assert len(receiver.received) == 4
    types = []
    for raw, header in receiver.received:
        event = stripe.Webhook.construct_event(raw, header, sandbox.webhook_secret, tolerance=300)
        assert event.object == "event" and event.livemode is False
        assert event.api_version == "2024-06-20" and event.id.startswith("evt_")
        types.append(event.type)
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(raw, header, "whsec_other", tolerance=300)
    assert types == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "charge.updated",
    ]
    first = json.loads(receiver.received[0][0])
    assert first["request"]["idempotency_key"]  # the stripe client always sends one on POST


def test_sign_matches_stripes_reference() -> None:
    header = sign('{"id": "evt_1"}', "whsec_x", timestamp=1700000000)
    expected = stripe.WebhookSignature._compute_signature('1700000000.{"id": "evt_1"}', "whsec_x")
    assert header == f"t=1700000000,v1={expected}"


def test_failed_delivery_is_retried_until_2xx(sandbox: SandboxServer, client, receiver) -> None:
    sandbox.webhook_url = receiver.url
    receiver.statuses = [500, 503]
    client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    assert sandbox.wait_idle(5)
    ids = [json.loads(raw)["id"] for raw, _ in receiver.received]
    assert len(ids) == 3 and len(set(ids)) == 1
    assert [a[1:] for a in sandbox.webhooks.attempts] == [(1, 500), (2, 503), (3, 200)]
    assert sandbox.state.delivery_success[ids[0]] is True


def test_connection_errors_are_retried(sandbox: SandboxServer, client) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on: refused
        probe.bind(("127.0.0.1", 0))
        sandbox.webhook_url = f"http://127.0.0.1:{probe.getsockname()[1]}/webhook"
    client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    assert sandbox.wait_idle(5)
    assert [a[2] for a in sandbox.webhooks.attempts] == [None] * 4  # 1 + 3 retries
    assert list(sandbox.state.delivery_success.values()) == [False]


def test_double_delivery_and_shuffle(sandbox: SandboxServer, pay, receiver) -> None:
    sandbox.webhook_url = receiver.url
    sandbox.webhooks.deliver_twice = True
    pay(1000)
    assert sandbox.wait_idle(5)
    ids = [json.loads(raw)["id"] for raw, _ in receiver.received]
    assert len(ids) == 8 and all(ids.count(i) == 2 for i in ids)

    receiver.received.clear()
    sandbox.webhooks.deliver_twice = False
    sandbox.webhooks.shuffle = True
    orders = set()
    for n in range(6):
        pay(1000, f"s-{n}")
        assert sandbox.wait_idle(5)
        batch = [json.loads(raw)["type"] for raw, _ in receiver.received[-4:]]
        orders.add(tuple(batch))
    assert len(orders) > 1  # not always emission order


def test_no_url_stores_only_and_url_can_be_set_later(
    sandbox: SandboxServer, client, receiver
) -> None:
    client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    assert sandbox.wait_idle(1) and receiver.received == []
    assert sandbox.state.events[0]["pending_webhooks"] == 0
    sandbox.webhook_url = receiver.url
    client.v1.payment_intents.create(params={"amount": 200, "currency": "usd"})
    assert receiver.wait_for(1)
    assert json.loads(receiver.received[0][0])["data"]["object"]["amount"] == 200


def test_pause_holds_deliveries(sandbox: SandboxServer, client, receiver) -> None:
    sandbox.webhook_url = receiver.url
    sandbox.webhooks.pause()
    client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    assert not sandbox.wait_idle(0.1)
    assert sandbox.webhooks.queued == 1
    sandbox.webhooks.resume()
    assert sandbox.wait_idle(5) and len(receiver.received) == 1
