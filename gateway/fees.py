"""The fee split of one sale: pure functions on integer minor units (DESIGN §3)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from gateway.money import exponent, round_half_up


class FeeSource(enum.StrEnum):
    """Where the Stripe fee of a split came from."""

    ACTUAL = "actual"  # the charge's balance transaction
    ESTIMATE = "estimate"  # the configured schedule
    ESTIMATE_FALLBACK = "estimate_fallback"  # waited for the actual fee, gave up


def _default_fixed() -> dict[str, int]:
    return {}


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Rates used to estimate Stripe's fee and to take the platform commission.

    ``fixed_fee`` is the per-charge fixed fee in minor units for currencies with
    two decimals (30 = 30 cents); ``fixed_fee_by_currency`` overrides it per
    currency (e.g. ``{"jpy": 0}``). Zero-decimal and three-decimal currencies
    without an override get the two-decimal fee rescaled (30 cents -> 0 yen,
    300 fils): an estimate, flagged as such.
    """

    stripe_percent: Decimal = Decimal("2.9")
    fixed_fee: int = 30
    platform_percent: Decimal = Decimal("1")
    fixed_fee_by_currency: Mapping[str, int] = field(default_factory=_default_fixed)

    def fixed_for(self, currency: str) -> int:
        code = currency.lower()
        if code in self.fixed_fee_by_currency:
            return self.fixed_fee_by_currency[code]
        places = exponent(code)
        if places == 2:
            return self.fixed_fee
        return round_half_up(Decimal(self.fixed_fee) * Decimal(10) ** (places - 2))


@dataclass(frozen=True, slots=True)
class FeeSplit:
    """gross = stripe_fee + commission + transfer, always, to the minor unit."""

    gross: int
    currency: str
    stripe_fee: int
    fee_source: FeeSource
    commission: int
    transfer: int

    @property
    def net(self) -> int:
        return self.gross - self.stripe_fee


def estimate_stripe_fee(gross: int, currency: str, schedule: FeeSchedule) -> int:
    """round(gross * percent) + fixed fee, never more than the gross."""
    fee = round_half_up(Decimal(gross) * schedule.stripe_percent / 100) + schedule.fixed_for(
        currency
    )
    return min(fee, gross)


def split(
    gross: int,
    currency: str,
    schedule: FeeSchedule,
    actual_fee: int | None = None,
    *,
    source: FeeSource | None = None,
) -> FeeSplit:
    """Split a gross amount; ``actual_fee`` (from the balance transaction) wins.

    ``source`` overrides the recorded source of an estimate (ESTIMATE_FALLBACK).
    """
    if gross < 0:
        raise ValueError("gross must not be negative")
    if actual_fee is not None:
        stripe_fee, fee_source = min(max(actual_fee, 0), gross), FeeSource.ACTUAL
    else:
        stripe_fee = estimate_stripe_fee(gross, currency, schedule)
        fee_source = source or FeeSource.ESTIMATE
    net = gross - stripe_fee
    commission = round_half_up(Decimal(net) * schedule.platform_percent / 100)
    commission = min(max(commission, 0), net)
    return FeeSplit(
        gross=gross,
        currency=currency.lower(),
        stripe_fee=stripe_fee,
        fee_source=fee_source,
        commission=commission,
        transfer=net - commission,
    )
