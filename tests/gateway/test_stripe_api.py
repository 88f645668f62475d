"""StripeGateway against a scripted loopback Stripe stub and against the sandbox."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from flask import Flask, Response, request

from gateway.errors import PermanentStripeError, StripeError, TransientStripeError
from gateway.models import DueTransfer
from gateway.stripe_api import StripeGateway, charge_snapshot, redact
from gateway.wsgi_server import WsgiServer

SECRET = "sk_test_51StubSecretKeyAbcdefGhijklmnop1234"
SPEC = json.loads(
    (Path(__file__).parents[1] / "data" / "stripe_spec_extract.json").read_text("utf-8")
)["paths"]


@dataclass
class Seen:
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]

    def value(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)


@dataclass
class Stub:
    """A loopback stand-in for api.stripe.com: scripted answers, recorded requests."""

    server: WsgiServer
    script: dict[tuple[str, str], deque[tuple[int, Any]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.server.url

    def on(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        self.script.setdefault((method, path), deque()).extend(answers)


@pytest.fixture
def stub() -> Iterator[Stub]:
    app = Flask("stripe-stub")
    s = Stub(server=WsgiServer(app, "127.0.0.1", 0, threads=2, name="stripe-stub"))

    @app.route("/<path:path>", methods=["GET", "POST", "DELETE"])
    def any_path(path: str) -> Response:
        body = request.get_data(as_text=True)
        params = parse_qsl(body if request.method == "POST" else request.query_string.decode())
        key = (request.method, "/" + path)
        with s.lock:
            s.seen.append(Seen(request.method, "/" + path, params, dict(request.headers)))
            answers = s.script.get(key)
            status, payload = answers.popleft() if answers else (404, _error("no script"))
            if answers is not None and not answers:
                answers.append((status, payload))  # the last answer repeats
        return Response(json.dumps(payload), status=status, mimetype="application/json")

    s.server.start()
    try:
        yield s
    finally:
        s.server.stop()


def _error(message: str, code: str = "", type_: str = "invalid_request_error") -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": type_}
    if code:
        error["code"] = code
    return {"error": error}


def _charge(**over: Any) -> dict[str, Any]:
    charge: dict[str, Any] = {
        "id": "ch_1",
        "object": "charge",
        "amount": 10000,
        "amount_captured": 10000,
        "amount_refunded": 0,
        "balance_transaction": {"id": "txn_1", "object": "balance_transaction", "fee": 350},
        "captured": True,
        "created": 1_700_000_000,
        "currency": "usd",
        "livemode": False,
        "metadata": {"order_id": "order-42"},
        "paid": True,
        "payment_intent": "pi_1",
        "status": "succeeded",
        "transfer_group": "order-42",
    }
    charge.update(over)
    return charge


def _gateway(stub: Stub, retries: int = 0) -> StripeGateway:
    return StripeGateway(SECRET, api_base=stub.url, timeout=(2, 5), max_network_retries=retries)


def _template(path: str) -> str:
    for template in SPEC:
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            return template
    raise AssertionError(f"{path} is not a path of Stripe's API")


def assert_params_in_spec(seen: list[Seen]) -> None:
    """Every request names only parameters Stripe's OpenAPI spec defines for it."""
    assert seen
    for req in seen:
        allowed = set(SPEC[_template(req.path)][req.method])
        names = {re.split(r"\[", k, maxsplit=1)[0] for k, _ in req.params}
        assert names <= allowed, (req.method, req.path, names - allowed)


def _transfer(**over: Any) -> DueTransfer:
    values: dict[str, Any] = {
        "charge_id": "ch_1",
        "amount": 9583,
        "currency": "usd",
        "destination": "acct_test123456",
        "transfer_group": "order-42",
        "idempotency_key": "ursus-transfer-ch_1",
        "attempts": 0,
        "metadata": {"order_id": "order-42"},
    }
    values.update(over)
    return DueTransfer(**values)


# -- successful calls: parameters and parsing -------------------------------------------


def test_retrieve_charge_expands_and_reads_the_actual_fee(stub: Stub) -> None:
    stub.on("GET", "/v1/charges/ch_1", (200, _charge()))
    snap = _gateway(stub).retrieve_charge("ch_1")
    assert (snap.charge_id, snap.order_id, snap.transfer_group) == ("ch_1", "order-42", "order-42")
    assert (snap.amount, snap.currency, snap.captured, snap.paid) == (10000, "usd", True, True)
    assert (snap.balance_transaction_id, snap.actual_fee) == ("txn_1", 350)
    assert snap.payment_intent_id == "pi_1"
    [req] = stub.seen
    assert req.params == [("expand[0]", "balance_transaction")]
    assert req.headers["Authorization"] == f"Bearer {SECRET}"
    assert_params_in_spec(stub.seen)


def test_null_balance_transaction_means_fee_unknown_not_zero(stub: Stub) -> None:
    stub.on("GET", "/v1/charges/ch_1", (200, _charge(balance_transaction=None)))
    snap = _gateway(stub).retrieve_charge("ch_1")
    assert snap.actual_fee is None
    assert snap.balance_transaction_id == ""


def test_unexpanded_balance_transaction_gives_no_fee() -> None:
    snap = charge_snapshot(_charge(balance_transaction="txn_9"))
    assert (snap.balance_transaction_id, snap.actual_fee) == ("txn_9", None)


def test_partial_capture_uses_the_captured_amount() -> None:
    snap = charge_snapshot(_charge(amount_captured=6000))
    assert snap.amount == 6000


def test_create_transfer_sends_exact_params_and_idempotency_key(stub: Stub) -> None:
    stub.on("POST", "/v1/transfers", (200, {"id": "tr_1", "object": "transfer"}))
    assert _gateway(stub).create_transfer(_transfer()) == "tr_1"
    [req] = stub.seen
    assert dict(req.params) == {
        "amount": "9583",
        "currency": "usd",
        "destination": "acct_test123456",
        "source_transaction": "ch_1",
        "transfer_group": "order-42",
        "metadata[order_id]": "order-42",
        "metadata[charge_id]": "ch_1",
    }
    assert req.headers["Idempotency-Key"] == "ursus-transfer-ch_1"
    assert_params_in_spec(stub.seen)


def test_create_transfer_without_group_omits_it(stub: Stub) -> None:
    stub.on("POST", "/v1/transfers", (200, {"id": "tr_2", "object": "transfer"}))
    _gateway(stub).create_transfer(_transfer(transfer_group=""))
    assert stub.seen[0].value("transfer_group") is None


def test_create_payment_intent(stub: Stub) -> None:
    pi = {"id": "pi_1", "object": "payment_intent", "client_secret": "pi_1_secret_x"}
    stub.on("POST", "/v1/payment_intents", (200, pi))
    gw = _gateway(stub)
    assert gw.create_payment_intent(
        1234, "USD", "order-7", "a@example.com", "Order 7", "ursus-pi-order-7"
    ) == ("pi_1", "pi_1_secret_x")
    gw.create_payment_intent(1234, "usd", "order-8", "", "", "ursus-pi-order-8")
    first, second = stub.seen
    assert dict(first.params) == {
        "amount": "1234",
        "currency": "usd",
        "metadata[order_id]": "order-7",
        "transfer_group": "order-7",
        "automatic_payment_methods[enabled]": "true",
        "receipt_email": "a@example.com",
        "description": "Order 7",
    }
    assert first.headers["Idempotency-Key"] == "ursus-pi-order-7"
    assert second.value("receipt_email") is None and second.value("description") is None
    assert_params_in_spec(stub.seen)


def test_find_transfer_matches_charge_across_pages(stub: Stub) -> None:
    page1 = {
        "object": "list",
        "has_more": True,
        "data": [{"id": "tr_a", "metadata": {"charge_id": "ch_other"}, "source_transaction": None}],
    }
    page2 = {
        "object": "list",
        "has_more": False,
        "data": [{"id": "tr_b", "metadata": {}, "source_transaction": "ch_1"}],
    }
    stub.on("GET", "/v1/transfers", (200, page1), (200, page2))
    assert _gateway(stub).find_transfer("order-42", "ch_1") == "tr_b"
    first, second = stub.seen
    assert first.value("transfer_group") == "order-42"
    assert second.value("starting_after") == "tr_a"
    assert_params_in_spec(stub.seen)


def test_find_transfer_none(stub: Stub) -> None:
    stub.on("GET", "/v1/transfers", (200, {"object": "list", "has_more": False, "data": []}))
    assert _gateway(stub).find_transfer("order-42", "ch_1") is None


def test_reversal_refunds_account(stub: Stub) -> None:
    stub.on("POST", "/v1/transfers/tr_1/reversals", (200, {"id": "trr_1", "amount": 500}))
    stub.on(
        "GET",
        "/v1/transfers/tr_1/reversals",
        (200, {"object": "list", "has_more": False, "data": [{"id": "trr_1", "amount": 500}]}),
    )
    refunds = [
        {"id": "re_2", "amount": 300, "created": 20, "status": "succeeded"},
        {"id": "re_1", "amount": 200, "created": 10, "status": "succeeded"},
    ]
    stub.on("GET", "/v1/refunds", (200, {"object": "list", "has_more": False, "data": refunds}))
    account = {
        "id": "acct_test123456",
        "object": "account",
        "business_profile": {"name": "Vendor Ltd"},
        "email": "v@example.com",
        "charges_enabled": True,
        "payouts_enabled": False,
    }
    stub.on("GET", "/v1/accounts/acct_test123456", (200, account))
    gw = _gateway(stub)
    assert gw.create_reversal("tr_1", 500, "ursus-reversal-ch_1-5000") == "trr_1"
    assert [r.amount for r in gw.list_reversals("tr_1")] == [500]
    assert [r.refund_id for r in gw.list_refunds("ch_1")] == ["re_1", "re_2"]
    info = gw.retrieve_account("acct_test123456")
    assert info["business_name"] == "Vendor Ltd" and info["email"] == "v@example.com"
    assert info["charges_enabled"] is True and info["payouts_enabled"] is False
    create = stub.seen[0]
    assert dict(create.params) == {"amount": "500"}
    assert create.headers["Idempotency-Key"] == "ursus-reversal-ch_1-5000"
    assert stub.seen[2].value("charge") == "ch_1"
    assert_params_in_spec(stub.seen)


def test_ping(stub: Stub) -> None:
    stub.on("GET", "/v1/balance", (200, {"object": "balance"}), (500, _error("down")))
    gw = _gateway(stub)
    assert gw.ping() is True
    assert gw.ping() is False
    assert_params_in_spec(stub.seen)


def test_ping_with_a_restricted_key_without_balance_access(stub: Stub) -> None:
    stub.on("GET", "/v1/balance", (403, _error("The provided key does not have access")))
    assert _gateway(stub).ping() is True


def test_stripe_library_does_not_log_request_details(
    stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    stub.on("GET", "/v1/charges/ch_1", (401, _error(f"Invalid API Key provided: {SECRET}")))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PermanentStripeError):
        _gateway(stub).retrieve_charge("ch_1")
    assert "sk_test_" not in caplog.text
    assert [r for r in caplog.records if r.name == "gateway.stripe_api"]


def test_ping_never_raises_when_nothing_listens() -> None:
    assert StripeGateway(SECRET, api_base=f"http://127.0.0.1:{_free_port()}").ping() is False


# -- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "payload", "kind", "code"),
    [
        (
            400,
            _error("Invalid integer: x", "parameter_invalid_integer"),
            PermanentStripeError,
            "parameter_invalid_integer",
        ),
        (
            402,
            _error("Your card was declined.", "card_declined", "card_error"),
            PermanentStripeError,
            "card_declined",
        ),
        (
            403,
            _error("Not allowed.", "", "invalid_request_error"),
            PermanentStripeError,
            "http_403",
        ),
        (
            404,
            _error("No such charge: 'ch_1'", "resource_missing"),
            PermanentStripeError,
            "resource_missing",
        ),
        (
            400,
            _error(
                "Keys for idempotent requests can only be used with the same parameters",
                "",
                "idempotency_error",
            ),
            PermanentStripeError,
            "http_400",
        ),
        (
            409,
            _error(
                "There is currently another in-progress request using this Idempotent Key",
                "idempotency_key_in_use",
            ),
            TransientStripeError,
            "idempotency_key_in_use",
        ),
        (429, _error("Too many requests", "lock_timeout"), TransientStripeError, "lock_timeout"),
        (429, _error("Too many requests", "rate_limit"), TransientStripeError, "rate_limit"),
        (500, _error("Something went wrong", "", "api_error"), TransientStripeError, "http_500"),
        (503, _error("Unavailable", "", "api_error"), TransientStripeError, "http_503"),
    ],
)
def test_error_mapping(
    stub: Stub, status: int, payload: dict[str, Any], kind: type[StripeError], code: str
) -> None:
    stub.on("POST", "/v1/transfers", (status, payload))
    with pytest.raises(StripeError) as info:
        _gateway(stub).create_transfer(_transfer())
    assert type(info.value) is kind
    assert (info.value.code, info.value.status) == (code, status)
    assert info.value.message == payload["error"]["message"]


def test_connection_refused_is_transient() -> None:
    gw = StripeGateway(SECRET, api_base=f"http://127.0.0.1:{_free_port()}", max_network_retries=0)
    with pytest.raises(TransientStripeError) as info:
        gw.retrieve_charge("ch_1")
    assert info.value.code == "network_error"
    assert "unreachable" in info.value.message
    assert "support@stripe.com" not in info.value.message


def test_retries_5xx_with_the_same_idempotency_key_then_succeeds(stub: Stub) -> None:
    stub.on(
        "POST",
        "/v1/transfers",
        (500, _error("boom", "", "api_error")),
        (409, _error("in use", "idempotency_key_in_use")),
        (200, {"id": "tr_ok", "object": "transfer"}),
    )
    assert _gateway(stub, retries=2).create_transfer(_transfer()) == "tr_ok"
    assert [r.headers["Idempotency-Key"] for r in stub.seen] == ["ursus-transfer-ch_1"] * 3


def test_unreadable_charge_is_permanent(stub: Stub) -> None:
    stub.on("GET", "/v1/charges/ch_1", (200, _charge(amount="lots")))
    with pytest.raises(PermanentStripeError) as info:
        _gateway(stub).retrieve_charge("ch_1")
    assert info.value.code == "unexpected_response"


def test_no_secret_in_exception_messages(stub: Stub) -> None:
    masked = f"sk_test_{'*' * 20}{SECRET[-4:]}"
    payload = _error(f"Invalid API Key provided: {masked} (you sent {SECRET})")
    stub.on("GET", "/v1/charges/ch_1", (401, payload))
    with pytest.raises(PermanentStripeError) as info:
        _gateway(stub).retrieve_charge("ch_1")
    exc = info.value
    assert exc.status == 401
    for text in (str(exc), repr(exc), exc.message, repr(exc.args)):
        assert SECRET not in text
        assert "sk_test_" not in text
    assert "[redacted" in exc.message
    assert exc.__cause__ is None and exc.__suppress_context__  # no stripe error chained
    assert SECRET not in repr(_gateway(stub))


def test_redact_masks_keys_and_webhook_secrets() -> None:
    text = "a sk_live_abc123 b rk_test_**** c whsec_AbC+/= d pk_test_x e"
    out = redact(text, ("mysecretvalue",)) + redact("mysecretvalue", ("mysecretvalue",))
    assert "sk_live" not in out and "rk_test" not in out and "whsec_" not in out
    assert "mysecretvalue" not in out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
