"""Fee maths: the seed example, small and zero-decimal amounts, rounding, actual fees."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.fees import FeeSchedule, FeeSource, FeeSplit, estimate_stripe_fee, split

DEFAULT = FeeSchedule()


def parts(s: FeeSplit) -> tuple[int, int, int, int]:
    return s.stripe_fee, s.net, s.commission, s.transfer


def test_the_seed_example_100_dollars() -> None:
    s = split(10000, "usd", DEFAULT)
    assert parts(s) == (320, 9680, 97, 9583)
    assert s.fee_source is FeeSource.ESTIMATE
    assert s.gross == 10000
    assert s.currency == "usd"


def test_the_smallest_charge_50_cents() -> None:
    # 50 * 2.9% = 1.45 -> 1, + 30 = 31; net 19; 1% of 19 = 0.19 -> 0
    assert parts(split(50, "usd", DEFAULT)) == (31, 19, 0, 19)


def test_currency_is_normalised_to_lower_case() -> None:
    assert split(10000, "USD", DEFAULT).currency == "usd"


def test_jpy_has_no_cents_so_the_30_cent_fixed_fee_rounds_to_zero_yen() -> None:
    assert DEFAULT.fixed_for("jpy") == 0
    # 1000 * 2.9% = 29; net 971; 1% = 9.71 -> 10
    assert parts(split(1000, "jpy", DEFAULT)) == (29, 971, 10, 961)


def test_a_per_currency_fixed_fee_override_wins() -> None:
    schedule = FeeSchedule(fixed_fee_by_currency={"jpy": 40})
    assert split(1000, "JPY", schedule).stripe_fee == 29 + 40


def test_three_decimal_currencies_rescale_the_fixed_fee() -> None:
    assert DEFAULT.fixed_for("kwd") == 300
    assert split(10000, "kwd", DEFAULT).stripe_fee == 290 + 300


def test_half_a_minor_unit_of_fee_rounds_up() -> None:
    # 500 * 2.9% = 14.5 -> 15 (ROUND_HALF_UP, not banker's 14)
    assert estimate_stripe_fee(500, "usd", DEFAULT) == 45
    # 2500 * 2.9% = 72.5 -> 73 (banker's rounding would give 72)
    assert estimate_stripe_fee(2500, "usd", DEFAULT) == 103


def test_half_a_minor_unit_of_commission_rounds_up_and_just_below_rounds_down() -> None:
    assert parts(split(1000, "usd", DEFAULT, actual_fee=550)) == (550, 450, 5, 445)  # 4.5 -> 5
    assert parts(split(1000, "usd", DEFAULT, actual_fee=551)) == (551, 449, 4, 445)  # 4.49 -> 4
    assert parts(split(1000, "usd", DEFAULT, actual_fee=750)) == (750, 250, 3, 247)  # 2.5 -> 3


def test_the_actual_fee_overrides_the_estimate() -> None:
    s = split(10000, "usd", DEFAULT, actual_fee=250)
    assert s.fee_source is FeeSource.ACTUAL
    assert parts(s) == (250, 9750, 98, 9652)  # 97.5 -> 98


def test_an_actual_fee_of_zero_is_a_real_fee_not_unknown() -> None:
    s = split(10000, "usd", DEFAULT, actual_fee=0)
    assert s.fee_source is FeeSource.ACTUAL
    assert parts(s) == (0, 10000, 100, 9900)


def test_an_actual_fee_above_the_gross_is_capped_and_nothing_is_transferred() -> None:
    assert parts(split(100, "usd", DEFAULT, actual_fee=500)) == (100, 0, 0, 0)


def test_the_estimate_never_exceeds_the_gross() -> None:
    assert estimate_stripe_fee(20, "usd", DEFAULT) == 20


def test_a_fallback_estimate_is_flagged_as_such() -> None:
    s = split(10000, "usd", DEFAULT, source=FeeSource.ESTIMATE_FALLBACK)
    assert s.fee_source is FeeSource.ESTIMATE_FALLBACK
    assert parts(s) == (320, 9680, 97, 9583)


def test_a_negative_gross_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        split(-1, "usd", DEFAULT)


def test_rates_are_settings() -> None:
    schedule = FeeSchedule(
        stripe_percent=Decimal("1.4"), fixed_fee=25, platform_percent=Decimal("2.5")
    )
    # 10000 * 1.4% = 140 + 25 = 165; net 9835; 2.5% = 245.875 -> 246
    assert parts(split(10000, "eur", schedule)) == (165, 9835, 246, 9589)


percent = st.decimals(min_value=0, max_value=20, places=2, allow_nan=False, allow_infinity=False)


@given(
    gross=st.integers(min_value=0, max_value=99_999_999),
    currency=st.sampled_from(["usd", "eur", "jpy", "krw", "kwd", "bhd", "gbp"]),
    stripe_percent=percent,
    platform_percent=percent,
    fixed_fee=st.integers(min_value=0, max_value=500),
    actual_fee=st.none() | st.integers(min_value=-10, max_value=200_000_000),
)
def test_fee_plus_commission_plus_transfer_is_always_the_gross(
    gross: int,
    currency: str,
    stripe_percent: Decimal,
    platform_percent: Decimal,
    fixed_fee: int,
    actual_fee: int | None,
) -> None:
    schedule = FeeSchedule(
        stripe_percent=stripe_percent, fixed_fee=fixed_fee, platform_percent=platform_percent
    )
    s = split(gross, currency, schedule, actual_fee)
    assert s.stripe_fee + s.commission + s.transfer == gross
    assert min(s.stripe_fee, s.commission, s.transfer) >= 0
    assert s.net == gross - s.stripe_fee
    assert all(isinstance(v, int) for v in parts(s))
    if actual_fee is None:
        assert s.fee_source is FeeSource.ESTIMATE
    else:
        assert s.fee_source is FeeSource.ACTUAL
        assert s.stripe_fee == min(max(actual_fee, 0), gross)
