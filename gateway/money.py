"""Currencies and amounts: integer minor units in, decimal strings out."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
# docs.stripe.com/currencies#three-decimal: amounts must end in 0.
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])

# Stripe's charge limits, in minor units. The USD bounds are the rule;
# zero-decimal currencies get their own floor (roughly 50 US cents).
MAX_AMOUNT = 99_999_999
MIN_AMOUNT = 50
MIN_AMOUNT_BY_CURRENCY = {"jpy": 50, "krw": 500, "vnd": 10_000, "clp": 500}


def exponent(currency: str) -> int:
    """Number of decimal places of the currency's minor unit."""
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def min_amount(currency: str) -> int:
    return MIN_AMOUNT_BY_CURRENCY.get(currency.lower(), MIN_AMOUNT)


def amount_problem(amount: object, currency: str) -> str | None:
    """Why ``amount`` (minor units) is not a valid charge amount, or None."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        return "must be an integer number of minor units (cents)"
    low = min_amount(currency)
    if amount < low or amount > MAX_AMOUNT:
        return f"must be between {low} and {MAX_AMOUNT} minor units"
    if currency.lower() in THREE_DECIMAL and amount % 10:
        return "must end in 0 for a three-decimal currency"
    return None


def to_major(amount: int, currency: str) -> str:
    """Format minor units as a plain decimal string: 9583 usd -> '95.83'."""
    places = exponent(currency)
    if places == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}"


def round_half_up(value: Decimal) -> int:
    """Round a Decimal to the nearest integer, halves away from zero."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
