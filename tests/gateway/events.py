"""Signed Stripe webhook deliveries built from the committed fixtures in tests/data.

The fixtures (charge_succeeded/updated/refunded.json) are Stripe's official
example charge from github.com/stripe/openapi's fixtures3.json (MIT), given a
captured 100.00 USD sale for order_1001 and wrapped in events the way Stripe
sends them (2-space indented JSON, ~4 KB).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import stripe

DATA = Path(__file__).resolve().parents[1] / "data"
WEBHOOK_SECRET = "whsec_test_fake_0123456789"
OLD_WEBHOOK_SECRET = "whsec_test_fake_old_rotated"


def fixture(name: str) -> bytes:
    """The raw bytes of tests/data/<name>.json (what Stripe would POST)."""
    return (DATA / f"{name}.json").read_bytes()


def event_body(
    event_id: str = "evt_test_0001",
    type: str = "charge.succeeded",
    object_id: str = "ch_test_0001",
    *,
    created: int = 1764158401,
    livemode: bool = False,
    **extra: Any,
) -> bytes:
    """A small event body, for tests that need many distinct events."""
    data = {
        "id": event_id,
        "object": "event",
        "type": type,
        "created": created,
        "livemode": livemode,
        "data": {"object": {"id": object_id, "object": "charge"}},
        **extra,
    }
    return json.dumps(data, indent=2).encode("utf-8")


def signed(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for ``payload``."""
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode("utf-8"),
        secret,
        timestamp=int(time.time()) if timestamp is None else timestamp,
    )


def delivery_headers(
    payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": signed(payload, secret, timestamp),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
