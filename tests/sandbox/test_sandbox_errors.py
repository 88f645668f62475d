"""Stripe-shaped errors and idempotency."""

from __future__ import annotations

import pytest
import requests
import stripe

from gateway.sandbox import SandboxServer
from gateway.sandbox.app import decode_params


def _post(
    sandbox: SandboxServer,
    path: str,
    data: dict[str, str],
    key: str | None = None,
    auth: str | None = None,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {auth or sandbox.secret_key}"}
    if key:
        headers["Idempotency-Key"] = key
    return requests.post(f"{sandbox.url}{path}", data=data, headers=headers, timeout=5)


def test_same_key_same_params_replays_without_creating(sandbox: SandboxServer) -> None:
    data = {"amount": "1500", "currency": "usd", "metadata[order_id]": "o-9"}
    first = _post(sandbox, "/v1/payment_intents", data, key="k-1")
    second = _post(sandbox, "/v1/payment_intents", data, key="k-1")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(sandbox.state.payment_intents) == 1
    assert len(sandbox.state.events) == 1


def test_same_key_different_params_is_an_idempotency_error(sandbox: SandboxServer, client) -> None:
    _post(sandbox, "/v1/payment_intents", {"amount": "1500", "currency": "usd"}, key="k-2")
    resp = _post(sandbox, "/v1/payment_intents", {"amount": "1600", "currency": "usd"}, key="k-2")
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "idempotency_error"
    assert len(sandbox.state.payment_intents) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create(
            params={"amount": 1700, "currency": "usd"}, options={"idempotency_key": "k-2"}
        )


def test_stored_errors_replay_too(sandbox: SandboxServer) -> None:
    data = {"amount": "100", "currency": "usd", "destination": sandbox.connected_account_id}
    first = _post(sandbox, "/v1/transfers", data, key="t-1")
    sandbox.state.add_available(1000)
    second = _post(sandbox, "/v1/transfers", data, key="t-1")
    assert first.status_code == second.status_code == 400
    assert second.json()["error"]["code"] == "balance_insufficient"
    assert _post(sandbox, "/v1/transfers", data, key="t-2").status_code == 200


def test_unknown_and_missing_parameters(sandbox: SandboxServer, client) -> None:
    resp = _post(
        sandbox, "/v1/payment_intents", {"amount": "100", "currency": "usd", "colour": "red"}
    )
    err = resp.json()["error"]
    assert resp.status_code == 400
    assert (err["type"], err["code"], err["param"]) == (
        "invalid_request_error",
        "parameter_unknown",
        "colour",
    )
    assert "colour" in err["message"]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.payment_intents.create(params={"currency": "usd"})  # type: ignore[typeddict-item]
    assert (missing.value.code, missing.value.param) == ("parameter_missing", "amount")
    with pytest.raises(stripe.InvalidRequestError) as missing_dest:
        client.v1.transfers.create(params={"amount": 1, "currency": "usd"})  # type: ignore[typeddict-item]
    assert missing_dest.value.param == "destination"
    # A validation failure is not saved: the key is usable for a correct request.
    bad = _post(sandbox, "/v1/payment_intents", {"currency": "usd"}, key="k-3")
    good = _post(sandbox, "/v1/payment_intents", {"currency": "usd", "amount": "100"}, key="k-3")
    assert (bad.status_code, good.status_code) == (400, 200)


def test_authentication(sandbox: SandboxServer) -> None:
    no_auth = requests.get(f"{sandbox.url}/v1/balance", timeout=5)
    assert no_auth.status_code == 401
    assert no_auth.json()["error"]["type"] == "invalid_request_error"
    wrong = requests.get(
        f"{sandbox.url}/v1/balance",
        timeout=5,
        headers={"Authorization": "Bearer sk_test_wrongwrongwrong"},
    )
    assert wrong.status_code == 401
    assert "sk_test_wrongwrongwrong" not in wrong.text  # the key is masked
    bad = stripe.StripeClient("sk_test_nope", base_addresses={"api": sandbox.url})
    with pytest.raises(stripe.AuthenticationError):
        bad.v1.balance.retrieve()
    assert sandbox.state.requests[-1].status == 401  # unauthenticated requests are logged


def test_unknown_ids_and_urls(sandbox: SandboxServer, client) -> None:
    for call in (
        lambda: client.v1.charges.retrieve("ch_missing"),
        lambda: client.v1.transfers.retrieve("tr_missing"),
        lambda: client.v1.events.retrieve("evt_missing"),
        lambda: client.v1.accounts.retrieve("acct_unknown"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as err:
            call()
        assert err.value.http_status == 404 and err.value.code == "resource_missing"
    resp = requests.get(
        f"{sandbox.url}/v1/customers",
        timeout=5,
        headers={"Authorization": f"Bearer {sandbox.secret_key}"},
    )
    assert resp.status_code == 404
    assert "Unrecognized request URL" in resp.json()["error"]["message"]


def test_decode_params_handles_stripe_form_encoding() -> None:
    pairs = [
        ("metadata[order_id]", "o"),
        ("expand[]", "a"),
        ("expand[]", "b"),
        ("types[0]", "x"),
        ("types[1]", "y"),
        ("automatic_payment_methods[enabled]", "true"),
        ("metadata[7]", "seven"),
    ]
    assert decode_params(pairs) == {
        "metadata": {"order_id": "o", "7": "seven"},
        "expand": ["a", "b"],
        "types": ["x", "y"],
        "automatic_payment_methods": {"enabled": "true"},
    }


def test_concurrent_requests_with_one_key_create_one_object(sandbox: SandboxServer, pay) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pi = pay(10000)
    params = {
        "amount": 9583,
        "currency": "usd",
        "destination": sandbox.connected_account_id,
        "source_transaction": pi.latest_charge,
    }

    def transfer(_: int) -> str:
        # A 409 idempotency_key_in_use is retried by the client (max_network_retries).
        client = sandbox.stripe_client(max_network_retries=5)
        return client.v1.transfers.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": f"ursus-transfer-{pi.latest_charge}"},
        ).id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(transfer, range(8)))
    assert len(ids) == 1 and list(sandbox.state.transfers) == list(ids)
