"""POST /create-payment-intent: API key, validation, Stripe errors, per-client rate limit."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fakes import API_KEY, OLD_API_KEY, STRIPE_KEY, FakeLedger, FakeStripe, make_config
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from gateway.app import create_app
from gateway.errors import PermanentStripeError, TransientStripeError

GOOD = {"amount": 10000, "currency": "usd", "order_id": "order_1001"}


@pytest.fixture
def stripe() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def app(stripe: FakeStripe) -> Flask:
    return create_app(make_config(api_keys=(API_KEY, OLD_API_KEY)), FakeLedger(), stripe)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(
    client: FlaskClient,
    body: Any = GOOD,
    *,
    key: str | None = API_KEY,
    ip: str | None = None,
    **kwargs: Any,
) -> TestResponse:
    headers = dict(kwargs.pop("headers", {}))
    if key is not None:
        headers["X-API-Key"] = key
    if ip is not None:
        headers["CF-Connecting-IP"] = ip  # the test client's peer is 127.0.0.1 (trusted)
    if "data" not in kwargs:
        kwargs["json"] = body
    return client.post("/create-payment-intent", headers=headers, **kwargs)


def test_creates_a_payment_intent_with_a_deterministic_idempotency_key(
    client: FlaskClient, stripe: FakeStripe
) -> None:
    response = post(
        client, {**GOOD, "email": "buyer@example.com", "description": "Two mugs", "currency": "EUR"}
    )
    assert response.status_code == 200
    assert response.get_json() == {
        "client_secret": "pi_test_0001_secret_abc1",
        "payment_intent_id": "pi_test_0001",
    }
    assert stripe.calls == [
        {
            "amount": 10000,
            "currency": "eur",
            "order_id": "order_1001",
            "email": "buyer@example.com",
            "description": "Two mugs",
            "idempotency_key": "ursus-pi-order_1001-10000-eur",
        }
    ]


def test_currency_defaults_to_usd_and_optional_fields_to_empty(
    client: FlaskClient, stripe: FakeStripe
) -> None:
    assert post(client, {"amount": 50, "order_id": "A-1", "email": None}).status_code == 200
    call = stripe.calls[0]
    assert (call["currency"], call["email"], call["description"]) == ("usd", "", "")
    assert call["idempotency_key"] == "ursus-pi-A-1-50-usd"


@pytest.mark.parametrize("key", [API_KEY, OLD_API_KEY])
def test_every_rotated_api_key_is_accepted(client: FlaskClient, key: str) -> None:
    assert post(client, key=key).status_code == 200


@pytest.mark.parametrize(
    "key",
    [None, "", "wrong-key-of-some-length", API_KEY[:-1], API_KEY + "x", API_KEY.upper(), "é" * 20],
)
def test_a_missing_or_wrong_key_is_401_with_a_fail2ban_line(
    client: FlaskClient, stripe: FakeStripe, caplog: pytest.LogCaptureFixture, key: str | None
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway"):
        response = post(client, key=key, ip="203.0.113.50")
    assert response.status_code == 401
    assert response.get_json() == {
        "error": {"code": "invalid_api_key", "message": "missing or invalid X-API-Key header"}
    }
    assert stripe.calls == []
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [("gateway.app", "ERROR", "Invalid API key attempt from 203.0.113.50")]
    if key:
        assert key not in caplog.text


def test_no_configured_api_key_refuses_everyone(stripe: FakeStripe) -> None:
    client = create_app(make_config(api_keys=()), FakeLedger(), stripe).test_client()
    assert post(client, key="").status_code == 401
    assert post(client, key=API_KEY).status_code == 401
    assert stripe.calls == []


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"currency": "usd", "order_id": "o1"}, "invalid_amount", "amount"),
        ({**GOOD, "amount": "10000"}, "invalid_amount", "amount"),
        ({**GOOD, "amount": 100.0}, "invalid_amount", "amount"),
        ({**GOOD, "amount": 100.5}, "invalid_amount", "amount"),
        ({**GOOD, "amount": True}, "invalid_amount", "amount"),
        ({**GOOD, "amount": 49}, "invalid_amount", "amount"),
        ({**GOOD, "amount": 0}, "invalid_amount", "amount"),
        ({**GOOD, "amount": -100}, "invalid_amount", "amount"),
        ({**GOOD, "amount": 100_000_000}, "invalid_amount", "amount"),
        ({**GOOD, "amount": 10**30}, "invalid_amount", "amount"),
        ({**GOOD, "amount": None}, "invalid_amount", "amount"),
        ({**GOOD, "currency": "kwd", "amount": 1005}, "invalid_amount", "amount"),
        ({**GOOD, "currency": "us"}, "invalid_currency", "currency"),
        ({**GOOD, "currency": "usdd"}, "invalid_currency", "currency"),
        ({**GOOD, "currency": "u5d"}, "invalid_currency", "currency"),
        ({**GOOD, "currency": 840}, "invalid_currency", "currency"),
        ({**GOOD, "currency": "ÜSD"}, "invalid_currency", "currency"),
        ({"amount": 100, "currency": "usd"}, "invalid_order_id", "order_id"),
        ({**GOOD, "order_id": ""}, "invalid_order_id", "order_id"),
        ({**GOOD, "order_id": "a" * 65}, "invalid_order_id", "order_id"),
        ({**GOOD, "order_id": "order 1"}, "invalid_order_id", "order_id"),
        ({**GOOD, "order_id": "order_1\n"}, "invalid_order_id", "order_id"),
        ({**GOOD, "order_id": "ordér"}, "invalid_order_id", "order_id"),
        ({**GOOD, "order_id": 1001}, "invalid_order_id", "order_id"),
        ({**GOOD, "email": "not-an-email"}, "invalid_email", "email"),
        ({**GOOD, "email": "a@b"}, "invalid_email", "email"),
        ({**GOOD, "email": "a @b.com"}, "invalid_email", "email"),
        ({**GOOD, "email": "a@@b.com"}, "invalid_email", "email"),
        ({**GOOD, "email": "x" * 250 + "@b.com"}, "invalid_email", "email"),
        ({**GOOD, "email": 5}, "invalid_email", "email"),
        ({**GOOD, "description": "d" * 501}, "invalid_description", "description"),
        ({**GOOD, "description": ["a"]}, "invalid_description", "description"),
        ({**GOOD, "description": "nul\x00byte"}, "invalid_description", "description"),
        # Lone surrogates are valid JSON but cannot be UTF-8 encoded for Stripe.
        ({**GOOD, "description": "a\ud800b"}, "invalid_description", "description"),
        ({**GOOD, "email": "\udfff@b.co"}, "invalid_email", "email"),
        ({**GOOD, "amonut": 5}, "unknown_field", "amonut"),
        ({**GOOD, "metadata": {}}, "unknown_field", "metadata"),
        ([GOOD], "invalid_body", "body"),
        ("order", "invalid_body", "body"),
        (None, "invalid_body", "body"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(
    client: FlaskClient, stripe: FakeStripe, body: Any, code: str, field: str
) -> None:
    response = post(client, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert error["message"].startswith(field)
    assert stripe.calls == []


@pytest.mark.parametrize(
    "body",
    [
        {**GOOD, "amount": 50},
        {**GOOD, "amount": 99_999_999},
        {**GOOD, "currency": "jpy", "amount": 500},
        {**GOOD, "currency": "kwd", "amount": 1000},
        {**GOOD, "order_id": "a" * 64},
        {**GOOD, "order_id": "A_b-9"},
        {**GOOD, "email": "first.last+tag@sub.example.co.uk"},
        {**GOOD, "email": ""},
        {**GOOD, "description": "d" * 500},
        {**GOOD, "description": "line one\nline two"},
        {**GOOD, "description": None},
    ],
)
def test_valid_edge_cases_are_accepted(client: FlaskClient, body: dict[str, Any]) -> None:
    assert post(client, body).status_code == 200


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"", "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (b"[" * 5_000 + b"]" * 5_000, "application/json", 400, "invalid_json"),
        (
            b"amount=100&order_id=o1",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (json.dumps(GOOD).encode(), "text/plain", 415, "unsupported_media_type"),
        (json.dumps(GOOD).encode(), None, 415, "unsupported_media_type"),
        (
            json.dumps({**GOOD, "description": "x" * 20_000}).encode(),
            "application/json",
            413,
            "payload_too_large",
        ),
    ],
)
def test_malformed_requests(
    client: FlaskClient,
    stripe: FakeStripe,
    data: bytes,
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    response = post(client, data=data, content_type=content_type)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert stripe.calls == []


def test_json_with_a_charset_is_accepted(client: FlaskClient) -> None:
    response = post(client, data=json.dumps(GOOD), content_type="application/json; charset=utf-8")
    assert response.status_code == 200


def test_a_transient_stripe_error_is_503(client: FlaskClient, stripe: FakeStripe) -> None:
    stripe.error = TransientStripeError("api_connection_error", "timed out", None)
    response = post(client)
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "stripe_unavailable"


@pytest.mark.parametrize(
    ("status", "code", "message", "http", "out_code"),
    [
        (400, "amount_too_small", "Amount must be at least $0.50 usd", 400, "amount_too_small"),
        (
            400,
            "parameter_invalid_integer",
            "Invalid integer: abc",
            400,
            "parameter_invalid_integer",
        ),
        (401, "", f"Invalid API Key provided: {STRIPE_KEY}", 502, "stripe_error"),
        (401, "", "Invalid API Key provided: sk_test_****6789", 502, "stripe_error"),
        (
            403,
            "Bad Code!",
            "restricted key rk_live_abcDEF123 lacks permission",
            502,
            "stripe_error",
        ),
        (404, "resource_missing", "No such account", 502, "resource_missing"),
    ],
)
def test_permanent_stripe_errors_never_echo_a_secret(
    client: FlaskClient,
    stripe: FakeStripe,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
    message: str,
    http: int,
    out_code: str,
) -> None:
    stripe.error = PermanentStripeError(code, message, status)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        response = post(client)
    assert response.status_code == http
    error = response.get_json()["error"]
    assert error["code"] == out_code
    text = response.get_data(as_text=True)
    for secret in (STRIPE_KEY, "sk_test_", "rk_live_", API_KEY):
        assert secret not in text
        assert secret not in caplog.text  # masked before logging, not only by the file filter
    assert error["message"]
    assert "Stripe refused a PaymentIntent for order_1001" in caplog.text


def test_the_same_order_with_other_details_is_a_clear_409(
    client: FlaskClient, stripe: FakeStripe
) -> None:
    stripe.error = PermanentStripeError(
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were "
        "first used with. Try using a key other than 'ursus-pi-order_1001-10000-usd'",
        400,
    )
    response = post(client)
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "order_conflict"
    assert "order_id" in error["message"] and "ursus-pi-" not in error["message"]


# -- rate limit ---------------------------------------------------------------


def test_the_11th_request_in_a_minute_is_429(client: FlaskClient, stripe: FakeStripe) -> None:
    for _ in range(10):
        assert post(client, ip="198.51.100.1").status_code == 200
    response = post(client, ip="198.51.100.1")
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert len(stripe.calls) == 10
    # Another client behind the same trusted proxy has its own budget.
    assert post(client, ip="198.51.100.2").status_code == 200


def test_failed_key_attempts_count_too(client: FlaskClient) -> None:
    for _ in range(10):
        assert post(client, key="guess-guess-guess", ip="198.51.100.3").status_code == 401
    assert post(client, ip="198.51.100.3").status_code == 429


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    peer = {"REMOTE_ADDR": "203.0.113.77"}
    for i in range(10):
        forged = {"X-Forwarded-For": f"10.9.8.{i}", "CF-Connecting-IP": f"10.9.9.{i}"}
        response = post(client, headers=forged, environ_base=peer)
        assert response.status_code == 200
    forged = {"X-Forwarded-For": "10.9.8.200"}
    assert post(client, headers=forged, environ_base=peer).status_code == 429
    with caplog.at_level(logging.ERROR, logger="gateway"):
        post(
            client,
            key="bad-bad-bad-bad",
            headers=forged,
            environ_base={"REMOTE_ADDR": "203.0.113.78"},
        )
    assert "Invalid API key attempt from 203.0.113.78" in caplog.text
