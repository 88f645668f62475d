"""POST /webhook: verify on the raw body, store, then 200; nothing stored on any rejection."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
import requests
from events import (
    OLD_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    delivery_headers,
    event_body,
    fixture,
    signed,
)
from fakes import FakeLedger, FakeStripe, make_config
from flask import Flask
from flask.testing import FlaskClient

from gateway.app import RateLimits, create_app
from gateway.errors import StorageError
from gateway.wsgi_server import WsgiServer

BODY = fixture("charge_succeeded")


class Wakes:
    """Counts on_event calls (the service wires processor.wake)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def ledger() -> FakeLedger:
    return FakeLedger()


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def app(ledger: FakeLedger, wakes: Wakes) -> Flask:
    config = make_config(webhook_secrets=(WEBHOOK_SECRET, OLD_WEBHOOK_SECRET))
    return create_app(config, ledger, FakeStripe(), on_event=wakes)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def deliver(client: FlaskClient, body: bytes = BODY, **kwargs: object) -> tuple[int, dict]:
    headers = kwargs.pop("headers", None) or delivery_headers(body)
    response = client.post("/webhook", data=body, headers=headers, **kwargs)  # type: ignore[arg-type]
    return response.status_code, response.get_json()


def test_a_signed_delivery_is_stored_raw_then_acknowledged(
    client: FlaskClient, ledger: FakeLedger, wakes: Wakes
) -> None:
    status, payload = deliver(client)
    assert (status, payload) == (200, {"received": True})
    stored = ledger.events["evt_3TestChargeSucceeded01"]
    assert stored.raw == BODY  # byte for byte what Stripe signed
    assert (stored.type, stored.created, stored.livemode, stored.object_id) == (
        "charge.succeeded",
        1764158401,
        False,
        "ch_3TestChargeSucceeded0001",
    )
    assert wakes.count == 1


@pytest.mark.parametrize("name", ["charge_succeeded", "charge_updated", "charge_refunded"])
def test_every_fixture_event_is_accepted(
    client: FlaskClient, ledger: FakeLedger, name: str
) -> None:
    body = fixture(name)
    assert deliver(client, body)[0] == 200
    assert any(e.raw == body for e in ledger.events.values())


def test_a_duplicate_delivery_is_a_200_that_stores_nothing_and_wakes_no_one(
    client: FlaskClient, ledger: FakeLedger, wakes: Wakes
) -> None:
    assert deliver(client)[1] == {"received": True}
    # Stripe re-signs a retry with a new timestamp; the event id is the same.
    status, payload = deliver(
        client, headers=delivery_headers(BODY, timestamp=int(time.time()) - 5)
    )
    assert (status, payload) == (200, {"received": True, "duplicate": True})
    assert len(ledger.events) == 1
    assert ledger.record_calls == 2
    assert wakes.count == 1


def test_both_rotated_secrets_are_accepted(client: FlaskClient, ledger: FakeLedger) -> None:
    new = event_body("evt_new_secret")
    old = event_body("evt_old_secret")
    assert deliver(client, new, headers=delivery_headers(new, WEBHOOK_SECRET))[0] == 200
    assert deliver(client, old, headers=delivery_headers(old, OLD_WEBHOOK_SECRET))[0] == 200
    assert set(ledger.events) == {"evt_new_secret", "evt_old_secret"}


NOW = int(time.time())


@pytest.mark.parametrize(
    ("case", "body", "headers", "code"),
    [
        ("missing header", BODY, {"Content-Type": "application/json"}, "missing_signature"),
        (
            "tampered body",
            BODY.replace(b"10000", b"1"),
            delivery_headers(BODY),
            "invalid_signature",
        ),
        (
            "wrong secret",
            BODY,
            delivery_headers(BODY, "whsec_testSomeoneElse123"),
            "invalid_signature",
        ),
        (
            "v0 only",
            BODY,
            {"Stripe-Signature": signed(BODY).replace("v1=", "v0=")},
            "invalid_signature",
        ),
        (
            "expired",
            BODY,
            {"Stripe-Signature": signed(BODY, timestamp=NOW - 3600)},
            "timestamp_out_of_tolerance",
        ),
        (
            "future",
            BODY,
            {"Stripe-Signature": signed(BODY, timestamp=NOW + 3600)},
            "timestamp_out_of_tolerance",
        ),
        ("not json", b"{oops", delivery_headers(b"{oops"), "invalid_payload"),
        ("no id", b'{"type": "x"}', delivery_headers(b'{"type": "x"}'), "invalid_payload"),
        ("no type", b'{"id": "evt_1"}', delivery_headers(b'{"id": "evt_1"}'), "invalid_payload"),
        ("empty body", b"", delivery_headers(b""), "invalid_payload"),
    ],
)
def test_rejected_deliveries_are_400_and_store_nothing(
    client: FlaskClient,
    ledger: FakeLedger,
    wakes: Wakes,
    case: str,
    body: bytes,
    headers: dict[str, str],
    code: str,
) -> None:
    status, payload = deliver(client, body, headers=headers)
    assert status == 400
    assert payload["error"]["code"] == code
    assert payload["error"]["message"]
    assert ledger.record_calls == 0
    assert wakes.count == 0


def test_storage_failure_is_a_503_with_a_log_line_and_no_payload(
    client: FlaskClient, ledger: FakeLedger, wakes: Wakes, caplog: pytest.LogCaptureFixture
) -> None:
    ledger.fail_with = StorageError("database is locked")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        status, payload = deliver(client)
    assert status == 503
    assert payload == {
        "error": {"code": "storage_unavailable", "message": "event not stored, retry later"}
    }
    assert ledger.events == {}
    assert wakes.count == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    line = errors[0].getMessage()
    assert "evt_3TestChargeSucceeded01" in line and "database is locked" in line
    assert "ch_3TestChargeSucceeded0001" not in line  # no payload in the log
    # Stripe's retry after the disk recovered is stored once.
    ledger.fail_with = None
    assert deliver(client) == (200, {"received": True})
    assert wakes.count == 1


def test_an_on_event_failure_still_acknowledges_the_stored_event(
    ledger: FakeLedger, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("processor gone")

    client = create_app(make_config(), ledger, FakeStripe(), on_event=broken).test_client()
    with caplog.at_level(logging.ERROR, logger="gateway"):
        assert deliver(client) == (200, {"received": True})
    assert "evt_3TestChargeSucceeded01" in ledger.events
    assert any("on_event callback failed" in r.getMessage() for r in caplog.records)


def test_no_webhook_secret_configured_fails_closed(ledger: FakeLedger) -> None:
    client = create_app(make_config(webhook_secrets=()), ledger, FakeStripe()).test_client()
    status, payload = deliver(client)
    assert status == 503
    assert payload["error"]["code"] == "webhook_not_configured"
    assert ledger.record_calls == 0


def test_a_body_over_the_limit_is_413_before_reading(ledger: FakeLedger) -> None:
    client = create_app(make_config(webhook_body_limit=1024), ledger, FakeStripe()).test_client()
    big = event_body("evt_big", padding="x" * 2000)
    status, payload = deliver(client, big)
    assert status == 413
    assert payload["error"]["code"] == "payload_too_large"
    assert ledger.record_calls == 0
    small = event_body("evt_small")
    assert deliver(client, small)[0] == 200


def test_default_body_limit_is_512_kib(client: FlaskClient, ledger: FakeLedger) -> None:
    fits = event_body("evt_fits", padding="x" * (500 * 1024))
    assert deliver(client, fits)[0] == 200
    too_big = event_body("evt_too_big", padding="x" * (512 * 1024))
    assert deliver(client, too_big)[0] == 413
    assert set(ledger.events) == {"evt_fits"}


def test_only_rejected_deliveries_count_toward_the_limit(ledger: FakeLedger) -> None:
    app = create_app(
        make_config(), ledger, FakeStripe(), rate_limits=RateLimits(webhook_rejections="3/hour")
    )
    client = app.test_client()
    # Genuine deliveries, many more than the limit: never throttled.
    for i in range(10):
        body = event_body(f"evt_ok_{i}")
        assert deliver(client, body)[0] == 200
    for _ in range(3):
        assert deliver(client, BODY, headers={"Stripe-Signature": "t=1,v1=00"})[0] == 400
    status, payload = deliver(client, BODY, headers={"Stripe-Signature": "t=1,v1=00"})
    assert (status, payload["error"]["code"]) == (429, "rate_limited")
    # The throttled address is cut off until the window ends (flask-limiter's
    # deduct_when semantics); another client is not affected.
    assert deliver(client, event_body("evt_after"))[0] == 429
    other = {"CF-Connecting-IP": "198.51.100.20"}
    body = event_body("evt_other_client")
    assert deliver(client, body, headers={**delivery_headers(body), **other})[0] == 200
    assert len(ledger.events) == 11


def test_default_rejection_limit_is_1000_per_hour(ledger: FakeLedger) -> None:
    client = create_app(make_config(), ledger, FakeStripe()).test_client()
    bad = {"Stripe-Signature": "t=1,v1=00"}
    codes = {deliver(client, b"{}", headers=bad)[0] for _ in range(1000)}
    assert codes == {400}
    assert deliver(client, b"{}", headers=bad)[0] == 429


# -- through waitress: real sockets, chunked bodies, forwarded addresses ------


@pytest.fixture
def server(app: Flask) -> Iterator[WsgiServer]:
    wsgi = WsgiServer(app, port=0, threads=2, name="test-webhook")
    wsgi.start()
    try:
        yield wsgi
    finally:
        wsgi.stop()


def test_through_waitress_including_a_chunked_body(
    server: WsgiServer, ledger: FakeLedger, wakes: Wakes
) -> None:
    with requests.Session() as session:
        response = session.post(
            f"{server.url}/webhook", data=BODY, headers=delivery_headers(BODY), timeout=10
        )
        assert (response.status_code, response.json()) == (200, {"received": True})
        assert response.headers["X-Content-Type-Options"] == "nosniff"

        body = event_body("evt_chunked")
        chunks = (body[i : i + 100] for i in range(0, len(body), 100))  # no Content-Length
        response = session.post(
            f"{server.url}/webhook", data=chunks, headers=delivery_headers(body), timeout=10
        )
        assert response.status_code == 200
        assert ledger.events["evt_chunked"].raw == body

        big = event_body("evt_big_chunked", padding="x" * (600 * 1024))
        chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
        response = session.post(
            f"{server.url}/webhook", data=chunks, headers=delivery_headers(big), timeout=10
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
    assert set(ledger.events) == {"evt_3TestChargeSucceeded01", "evt_chunked"}
    assert wakes.count == 2


def test_an_unexpected_ledger_error_is_a_bare_500_logged_with_its_traceback(
    client: FlaskClient, ledger: FakeLedger, wakes: Wakes, caplog: pytest.LogCaptureFixture
) -> None:
    ledger.fail_with = RuntimeError(f"bug while holding {WEBHOOK_SECRET}")
    with caplog.at_level(logging.ERROR, logger="gateway"):
        response = client.post("/webhook", data=BODY, headers=delivery_headers(BODY))
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal_error", "message": "internal error"}}
    assert WEBHOOK_SECRET not in response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    assert [r.exc_info is not None for r in caplog.records] == [True]
    assert wakes.count == 0


@pytest.mark.parametrize(
    ("environ", "status", "code"),
    [
        ({"CONTENT_LENGTH": "abc"}, 400, "invalid_payload"),
        ({"CONTENT_LENGTH": "-5"}, 400, "invalid_payload"),
        ({"CONTENT_LENGTH": str(10**12)}, 413, "payload_too_large"),
    ],
)
def test_a_bad_content_length_reads_nothing(
    client: FlaskClient, ledger: FakeLedger, environ: dict[str, str], status: int, code: str
) -> None:
    response = client.post(
        "/webhook",
        data=BODY,
        headers=delivery_headers(b""),  # a valid signature for the empty body read
        environ_overrides=environ,
    )
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert ledger.record_calls == 0
