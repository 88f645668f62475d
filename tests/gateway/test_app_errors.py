"""Error shapes (404/405/500), security headers; no secret or traceback in any response or log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from events import WEBHOOK_SECRET, delivery_headers, fixture
from fakes import API_KEY, STRIPE_KEY, FakeLedger, FakeStripe, make_config
from flask import Flask
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.errors import PermanentStripeError
from gateway.logs import setup_logging

SECRETS = (API_KEY, STRIPE_KEY, WEBHOOK_SECRET)


@pytest.fixture
def app() -> Flask:
    app = create_app(make_config(), FakeLedger(), FakeStripe())

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError(f"exploded while holding {STRIPE_KEY} and {WEBHOOK_SECRET}")

    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/", 404, "not_found"),
        ("GET", "/nope", 404, "not_found"),
        ("POST", "/create-payment-intent/", 404, "not_found"),
        ("GET", "/static/app.js", 404, "not_found"),
        ("GET", "/webhook", 405, "method_not_allowed"),
        ("PUT", "/webhook", 405, "method_not_allowed"),
        ("GET", "/create-payment-intent", 405, "method_not_allowed"),
        ("DELETE", "/health", 405, "method_not_allowed"),
        ("POST", "/health", 405, "method_not_allowed"),
        ("OPTIONS", "/webhook", 405, "method_not_allowed"),
        ("OPTIONS", "/create-payment-intent", 405, "method_not_allowed"),
    ],
)
def test_http_errors_are_json(
    client: FlaskClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    if status == 405:
        assert response.headers["Allow"] in ("POST", "GET, HEAD")


def test_an_unhandled_exception_is_a_bare_500(client: FlaskClient) -> None:
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal_error", "message": "internal error"}}
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "exploded" not in text and "RuntimeError" not in text


def test_the_traceback_goes_to_error_log_redacted(client: FlaskClient, tmp_path: Path) -> None:
    files = setup_logging(tmp_path, secrets=SECRETS)
    try:
        assert client.get("/boom").status_code == 500
    finally:
        files.teardown()
    error_log = files.error_log.read_text("utf-8")
    assert "ERROR gateway.app Unhandled error on GET /boom" in error_log
    assert "Traceback (most recent call last)" in error_log
    assert "RuntimeError: exploded while holding [REDACTED] and [REDACTED]" in error_log
    for secret in SECRETS:
        assert secret not in error_log


def test_every_response_carries_the_security_headers(client: FlaskClient) -> None:
    body = fixture("charge_succeeded")
    responses = [
        client.get("/health"),
        client.post("/webhook", data=body, headers=delivery_headers(body)),
        client.post("/webhook", data=b"x"),
        client.post("/create-payment-intent", json={}, headers={"X-API-Key": API_KEY}),
        client.get("/boom"),
        client.get("/missing"),
    ]
    for response in responses:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.mimetype == "application/json"


def test_no_response_carries_a_secret(tmp_path: Path) -> None:
    stripe = FakeStripe(
        error=PermanentStripeError("", f"Invalid API Key provided: {STRIPE_KEY}", 401)
    )
    app = create_app(make_config(), FakeLedger(), stripe)
    client = app.test_client()
    body = fixture("charge_succeeded")
    files = setup_logging(tmp_path, secrets=SECRETS)
    try:
        responses = [
            client.get("/health"),
            client.post("/webhook", data=body, headers=delivery_headers(body)),
            client.post("/webhook", data=body + b" ", headers=delivery_headers(body)),
            client.post("/webhook", data=body, headers={"Stripe-Signature": WEBHOOK_SECRET}),
            client.post("/create-payment-intent", json={"amount": 100, "order_id": "o"}),
            client.post(
                "/create-payment-intent",
                json={"amount": 100, "order_id": "o"},
                headers={"X-API-Key": API_KEY},
            ),
            client.post(
                "/create-payment-intent",
                json={"amount": 100, "order_id": STRIPE_KEY},
                headers={"X-API-Key": API_KEY},
            ),
            client.get(f"/{STRIPE_KEY}"),
        ]
    finally:
        files.teardown()
    logs = files.access_log.read_text("utf-8") + files.error_log.read_text("utf-8")
    assert logs.count("\n") >= len(responses)
    for response in responses:
        text = response.get_data(as_text=True) + str(response.headers)
        for secret in SECRETS:
            assert secret not in text
    for secret in SECRETS:
        assert secret not in logs


CHECK_NO_QT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from fakes import FakeLedger, FakeStripe, make_config
from gateway.app import create_app
from gateway.health import HealthProbe
from gateway.logs import setup_logging
app = create_app(make_config(), FakeLedger(), FakeStripe(), HealthProbe(FakeStripe()))
assert app.test_client().get("/health").status_code == 200
bad = sorted({{n.split(".")[0] for n in sys.modules}} & {{"PySide6", "shiboken6", "ursus_desktop"}})
print(",".join(bad))
"""


def test_the_web_app_imports_no_qt() -> None:
    code = CHECK_NO_QT.format(tests=str(Path(__file__).parent))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == ""
