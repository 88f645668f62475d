"""Validation of ``POST /create-payment-intent`` bodies: pure functions, no Flask.

Unknown fields are rejected (``unknown_field``), as Stripe itself rejects unknown
parameters: a misspelt optional field (``emial``) would otherwise be dropped
without anyone noticing. ``email``/``description`` may be absent, null or "".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.money import amount_problem

FIELDS = frozenset({"amount", "currency", "order_id", "email", "description"})
DEFAULT_CURRENCY = "usd"
MAX_EMAIL_LEN = 254  # RFC 5321 path limit
MAX_DESCRIPTION_LEN = 500
MAX_ORDER_ID_LEN = 64

ORDER_ID_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ORDER_ID_LEN}}}")
CURRENCY_RE = re.compile(r"[a-z]{3}")
# Deliberately loose: one @, a dot in the domain, no spaces or control characters.
# Stripe validates receipt_email properly; this only stops obvious junk.
# Lone surrogates (JSON allows "\ud800") cannot be UTF-8 encoded for Stripe: refused
# like control characters rather than failing later as a 500.
_BAD = r"\x00-\x1f\x7f\ud800-\udfff"
EMAIL_RE = re.compile(rf"[^@\s{_BAD}]{{1,64}}@[^@\s{_BAD}]+\.[^@\s{_BAD}.]+")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class ValidationError(ValueError):
    """One rejected field; ``code``/``field``/``message`` go into the 400 response."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.code = code
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class PaymentIntentRequest:
    """A validated create-payment-intent request."""

    amount: int  # minor units
    currency: str  # lowercase ISO 4217
    order_id: str
    email: str | None = None
    description: str | None = None

    @property
    def idempotency_key(self) -> str:
        """Same order, amount and currency: the same PaymentIntent (retries are safe)."""
        return f"ursus-pi-{self.order_id}-{self.amount}-{self.currency}"


def parse_currency(value: object) -> str:
    if value is None:
        return DEFAULT_CURRENCY
    if not isinstance(value, str) or not CURRENCY_RE.fullmatch(value.lower()):
        raise ValidationError(
            "invalid_currency", "currency", "must be a three-letter ISO currency code"
        )
    return value.lower()


def parse_amount(value: object, currency: str) -> int:
    if value is None:
        raise ValidationError("invalid_amount", "amount", "is required")
    problem = amount_problem(value, currency)
    if problem is not None:
        raise ValidationError("invalid_amount", "amount", problem)
    assert isinstance(value, int)  # amount_problem checked it
    return value


def parse_order_id(value: object) -> str:
    if value is None:
        raise ValidationError("invalid_order_id", "order_id", "is required")
    if not isinstance(value, str) or not ORDER_ID_RE.fullmatch(value):
        raise ValidationError(
            "invalid_order_id",
            "order_id",
            f"must be 1 to {MAX_ORDER_ID_LEN} letters, digits, '_' or '-'",
        )
    return value


def parse_email(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_EMAIL_LEN or not EMAIL_RE.fullmatch(value):
        raise ValidationError("invalid_email", "email", "must be an email address")
    return value


def parse_description(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationError("invalid_description", "description", "must be a string")
    if len(value) > MAX_DESCRIPTION_LEN:
        raise ValidationError(
            "invalid_description",
            "description",
            f"must be at most {MAX_DESCRIPTION_LEN} characters",
        )
    if CONTROL_RE.search(value):
        raise ValidationError(
            "invalid_description",
            "description",
            "must not contain control characters or invalid Unicode",
        )
    return value


def parse_payment_intent_request(body: object) -> PaymentIntentRequest:
    """Validate a decoded JSON body; raises ValidationError naming the first bad field."""
    if not isinstance(body, dict):
        raise ValidationError("invalid_body", "body", "must be a JSON object")
    unknown = sorted(str(k) for k in body if k not in FIELDS)
    if unknown:
        # Name the field but cap it: it is attacker-chosen text echoed back.
        raise ValidationError("unknown_field", unknown[0][:64], "is not a known field")
    currency = parse_currency(body.get("currency"))
    return PaymentIntentRequest(
        amount=parse_amount(body.get("amount"), currency),
        currency=currency,
        order_id=parse_order_id(body.get("order_id")),
        email=parse_email(body.get("email")),
        description=parse_description(body.get("description")),
    )
