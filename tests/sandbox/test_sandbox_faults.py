"""Fault injection: seeded error rates, dropped connections, latency; clients retry through."""

from __future__ import annotations

import time

import pytest
import requests
import stripe

from gateway.sandbox import FaultKind, FaultPlan, SandboxServer


def _auth(sandbox: SandboxServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {sandbox.secret_key}"}


def test_rates_are_roughly_honoured_and_seeded(sandbox: SandboxServer) -> None:
    sandbox.faults.seed(7)
    sandbox.faults.add("/v1/balance", error_500=0.2, error_429=0.1)
    statuses = [
        requests.get(f"{sandbox.url}/v1/balance", headers=_auth(sandbox), timeout=5).status_code
        for _ in range(300)
    ]
    assert 35 <= statuses.count(500) <= 85  # expected 60
    assert 12 <= statuses.count(429) <= 50  # expected 30
    assert statuses.count(200) == 300 - statuses.count(500) - statuses.count(429)
    # Same seed, same sequence of decisions.
    replay = FaultPlan(7)
    replay.add("/v1/balance", error_500=0.2, error_429=0.1)
    kinds = [replay.decide("GET", "/v1/balance") for _ in range(300)]
    assert [int(k.value) if k else 200 for k in kinds] == statuses
    # Other paths are untouched.
    assert (
        requests.get(f"{sandbox.url}/v1/events", headers=_auth(sandbox), timeout=5).status_code
        == 200
    )


def test_injected_errors_look_like_stripe(sandbox: SandboxServer) -> None:
    sandbox.faults.fail_next("/v1/balance", FaultKind.ERROR_429)
    sandbox.faults.fail_next("/v1/balance", "500")
    first = requests.get(f"{sandbox.url}/v1/balance", headers=_auth(sandbox), timeout=5)
    second = requests.get(f"{sandbox.url}/v1/balance", headers=_auth(sandbox), timeout=5)
    assert first.status_code == 429 and first.json()["error"]["code"] == "rate_limit"
    assert first.headers["Stripe-Should-Retry"] == "true"
    assert second.status_code == 500 and second.json()["error"]["type"] == "api_error"
    assert [r.fault for r in sandbox.state.requests] == ["429", "500"]


def test_stripe_client_retries_through_faults(sandbox: SandboxServer, client, pay) -> None:
    pi = pay(10000)
    sandbox.faults.fail_next("/v1/transfers", FaultKind.ERROR_500)
    sandbox.faults.fail_next("/v1/transfers", FaultKind.RESET)
    tr = client.v1.transfers.create(
        params={
            "amount": 9583,
            "currency": "usd",
            "destination": sandbox.connected_account_id,
            "source_transaction": pi.latest_charge,
        }
    )
    assert tr.amount == 9583
    tries = [r for r in sandbox.state.requests if r.path == "/v1/transfers"]
    assert [r.fault for r in tries] == ["500", "reset", None]
    assert len({r.idempotency_key for r in tries}) == 1  # retried with the same key

    sandbox.faults.fail_next("/v1/charges/*", FaultKind.ERROR_429)
    assert client.v1.charges.retrieve(pi.latest_charge).id == pi.latest_charge


def test_lost_answer_is_replayed_by_idempotency(sandbox: SandboxServer, client, pay) -> None:
    pi = pay(10000)
    sandbox.faults.fail_next("/v1/transfers", FaultKind.RESET_AFTER)
    tr = client.v1.transfers.create(
        params={
            "amount": 9583,
            "currency": "usd",
            "destination": sandbox.connected_account_id,
            "source_transaction": pi.latest_charge,
        }
    )
    assert list(sandbox.state.transfers) == [tr.id]  # created once, answer replayed


def test_reset_without_retries_is_a_connection_error(sandbox: SandboxServer) -> None:
    sandbox.faults.fail_next("/v1/balance", FaultKind.RESET)
    no_retry = sandbox.stripe_client(max_network_retries=0)
    with pytest.raises(stripe.APIConnectionError):
        no_retry.v1.balance.retrieve()
    with pytest.raises(requests.ConnectionError):
        sandbox.faults.fail_next("/v1/balance", FaultKind.RESET)
        requests.get(f"{sandbox.url}/v1/balance", headers=_auth(sandbox), timeout=5)


def test_slow_and_latency(sandbox: SandboxServer) -> None:
    sandbox.faults.slow_seconds = 0.3
    sandbox.faults.fail_next("/v1/balance", FaultKind.SLOW)
    with pytest.raises(requests.Timeout):
        requests.get(f"{sandbox.url}/v1/balance", headers=_auth(sandbox), timeout=0.1)
    sandbox.faults.latency = 0.05
    start = time.monotonic()
    assert (
        requests.get(f"{sandbox.url}/v1/balance", headers=_auth(sandbox), timeout=5).status_code
        == 200
    )
    assert time.monotonic() - start >= 0.05
    sandbox.faults.clear()
    assert sandbox.faults.latency == 0


def test_faults_never_touch_webhook_deliveries(sandbox: SandboxServer, client, receiver) -> None:
    sandbox.webhook_url = receiver.url
    sandbox.faults.add("*", error_500=1.0, method="POST")
    with pytest.raises(stripe.APIError):
        client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    sandbox.faults.clear()
    client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    sandbox.faults.add("*", error_500=1.0)
    assert sandbox.wait_idle(5)
    assert len(receiver.received) == 1
    assert sandbox.webhooks.attempts[0][2] == 200


def test_rates_must_make_sense() -> None:
    plan = FaultPlan(1)
    with pytest.raises(ValueError, match="add up"):
        plan.add("*", error_500=0.7, reset=0.5)
