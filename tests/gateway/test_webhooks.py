"""Webhook signature verification (fast path) and event field extraction."""

from __future__ import annotations

import time

import pytest
import stripe
from events import OLD_WEBHOOK_SECRET, WEBHOOK_SECRET, event_body, fixture, signed

from gateway.webhooks import (
    WebhookEvent,
    WebhookRejected,
    parse_event,
    signature_timestamp,
    verify_and_parse,
    verify_signature,
)

BODY = fixture("charge_succeeded")


def rejected_code(payload: bytes, header: str | None, secrets: tuple[str, ...]) -> str:
    with pytest.raises(WebhookRejected) as info:
        verify_and_parse(payload, header, secrets)
    return info.value.code


def test_a_valid_signature_returns_the_fixture_fields() -> None:
    event = verify_and_parse(BODY, signed(BODY), (WEBHOOK_SECRET,))
    assert event == WebhookEvent(
        event_id="evt_3TestChargeSucceeded01",
        type="charge.succeeded",
        created=1764158401,
        livemode=False,
        object_id="ch_3TestChargeSucceeded0001",
    )


@pytest.mark.parametrize("name", ["charge_succeeded", "charge_updated", "charge_refunded"])
def test_every_fixture_verifies_and_matches_stripe_construct_event(name: str) -> None:
    body = fixture(name)
    header = signed(body)
    ours = verify_and_parse(body, header, (WEBHOOK_SECRET,))
    theirs = stripe.Webhook.construct_event(body, header, WEBHOOK_SECRET, tolerance=300)
    assert (ours.event_id, ours.type, ours.created, ours.object_id) == (
        theirs.id,
        theirs.type,
        theirs.created,
        theirs.data.object.id,
    )


def test_rotation_accepts_old_and_new_secrets() -> None:
    secrets = (WEBHOOK_SECRET, OLD_WEBHOOK_SECRET)
    assert verify_signature(BODY, signed(BODY, WEBHOOK_SECRET), secrets) == BODY.decode()
    assert verify_signature(BODY, signed(BODY, OLD_WEBHOOK_SECRET), secrets) == BODY.decode()


def test_a_header_carrying_a_stale_and_a_good_signature_is_accepted() -> None:
    # Stripe sends one v1 per active secret while an endpoint secret is rolled.
    now = int(time.time())
    good = signed(BODY, WEBHOOK_SECRET, now).split(",")[1]
    stale = signed(BODY, "whsec_testUnknown", now).split(",")[1]
    header = f"t={now},{stale},{good}"
    assert verify_and_parse(BODY, header, (WEBHOOK_SECRET,)).type == "charge.succeeded"


def _v0_only(body: bytes) -> str:
    return signed(body).replace("v1=", "v0=")


@pytest.mark.parametrize(
    ("case", "payload", "header", "secrets", "code"),
    [
        ("missing", BODY, None, (WEBHOOK_SECRET,), "missing_signature"),
        ("empty", BODY, "", (WEBHOOK_SECRET,), "missing_signature"),
        (
            "tampered",
            BODY.replace(b"10000", b"99999"),
            signed(BODY),
            (WEBHOOK_SECRET,),
            "invalid_signature",
        ),
        (
            "wrong secret",
            BODY,
            signed(BODY, "whsec_testSomebodyElse"),
            (WEBHOOK_SECRET,),
            "invalid_signature",
        ),
        ("no secrets configured", BODY, signed(BODY), (), "invalid_signature"),
        ("empty secret configured", BODY, signed(BODY, ""), ("",), "invalid_signature"),
        ("v0 only", BODY, _v0_only(BODY), (WEBHOOK_SECRET,), "invalid_signature"),
        ("no timestamp", BODY, "v1=" + "0" * 64, (WEBHOOK_SECRET,), "invalid_signature"),
        ("bad timestamp", BODY, "t=abc,v1=" + "0" * 64, (WEBHOOK_SECRET,), "invalid_signature"),
        (
            "signature without value",
            BODY,
            f"t={int(time.time())},v1",
            (WEBHOOK_SECRET,),
            "invalid_signature",
        ),
        (
            "huge header",
            BODY,
            signed(BODY) + ",v1=00" * 2000,
            (WEBHOOK_SECRET,),
            "invalid_signature",
        ),
        ("not utf-8", b"\xff\xfe" + BODY, signed(BODY), (WEBHOOK_SECRET,), "invalid_signature"),
    ],
)
def test_bad_signatures_are_rejected(
    case: str, payload: bytes, header: str | None, secrets: tuple[str, ...], code: str
) -> None:
    assert rejected_code(payload, header, secrets) == code


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (-301, False),
        (-3600, False),
        (-290, True),
        (0, True),
        (290, True),
        (301, False),
        (86400, False),
    ],
)
def test_timestamp_tolerance_is_checked_both_ways(offset: int, ok: bool) -> None:
    header = signed(BODY, timestamp=int(time.time()) + offset)
    if ok:
        assert verify_and_parse(BODY, header, (WEBHOOK_SECRET,)).event_id
    else:
        assert rejected_code(BODY, header, (WEBHOOK_SECRET,)) == "timestamp_out_of_tolerance"


def test_a_replayed_old_delivery_is_rejected_even_with_a_valid_signature() -> None:
    old = signed(BODY, timestamp=int(time.time()) - 600)
    # stripe's own check agrees (it is kept as a second guard).
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY.decode(), old, WEBHOOK_SECRET, tolerance=300)
    assert rejected_code(BODY, old, (WEBHOOK_SECRET,)) == "timestamp_out_of_tolerance"


def test_signature_timestamp_parsing() -> None:
    assert signature_timestamp("t=123,v1=abc") == 123
    assert signature_timestamp("v1=abc, t=456") == 456
    for bad in ("v1=abc", "t=", "t=-5", "t=1e9", "t=" + "9" * 20):
        with pytest.raises(WebhookRejected):
            signature_timestamp(bad)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "charge.succeeded"}', "no id"),
        (b'{"id": "", "type": "charge.succeeded"}', "no id"),
        (b'{"id": 5, "type": "charge.succeeded"}', "no id"),
        (b'{"id": "evt_1"}', "no type"),
        (b'{"id": "evt_1", "type": null}', "no type"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"id": "evt_\\ud800", "type": "charge.succeeded"}', "no id"),
        (b'{"id": "evt_1", "type": "charge.\\udfff"}', "no type"),
    ],
)
def test_malformed_signed_payloads_are_rejected(body: bytes, reason: str) -> None:
    with pytest.raises(WebhookRejected) as info:
        verify_and_parse(body, signed(body), (WEBHOOK_SECRET,))
    assert info.value.code == "invalid_payload"
    assert reason in info.value.message


def test_values_the_ledger_cannot_store_are_dropped() -> None:
    body = b'{"id": "evt_1", "type": "t", "created": 9223372036854775808, '
    body += b'"data": {"object": {"id": "ch_\\ud800"}}}'
    assert parse_event(body) == WebhookEvent("evt_1", "t", 0, False, "")


def test_optional_fields_default_sensibly() -> None:
    event = parse_event(b'{"id": "evt_1", "type": "ping", "created": true, "data": []}')
    assert event == WebhookEvent("evt_1", "ping", 0, False, "")
    live = parse_event(event_body("evt_2", "charge.refunded", "ch_9", created=7, livemode=True))
    assert live == WebhookEvent("evt_2", "charge.refunded", 7, True, "ch_9")


def test_verification_happens_before_parsing() -> None:
    # Invalid JSON with a bad signature is a signature error: nothing unverified is parsed.
    body = b"{not json"
    assert rejected_code(body, signed(b"{}"), (WEBHOOK_SECRET,)) == "invalid_signature"
