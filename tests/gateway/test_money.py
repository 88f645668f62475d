"""Currencies and amounts: exponents, major-unit strings, charge amount validation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.money import (
    MAX_AMOUNT,
    amount_problem,
    exponent,
    min_amount,
    round_half_up,
    to_major,
)


@pytest.mark.parametrize(
    ("currency", "places"),
    [("usd", 2), ("EUR", 2), ("jpy", 0), ("JPY", 0), ("krw", 0), ("kwd", 3), ("BHD", 3)],
)
def test_exponents(currency: str, places: int) -> None:
    assert exponent(currency) == places


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (9583, "usd", "95.83"),
        (10000, "usd", "100.00"),
        (5, "usd", "0.05"),
        (0, "usd", "0.00"),
        (-5, "usd", "-0.05"),
        (-12345, "eur", "-123.45"),
        (1000, "jpy", "1000"),
        (0, "JPY", "0"),
        (1250, "kwd", "1.250"),
        (5, "kwd", "0.005"),
    ],
)
def test_to_major(amount: int, currency: str, text: str) -> None:
    assert to_major(amount, currency) == text


@given(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(["usd", "jpy", "kwd"]))
def test_to_major_is_exact(amount: int, currency: str) -> None:
    assert Decimal(to_major(amount, currency)) == Decimal(amount).scaleb(-exponent(currency))


def test_valid_amounts_have_no_problem() -> None:
    assert amount_problem(50, "usd") is None
    assert amount_problem(MAX_AMOUNT, "usd") is None
    assert amount_problem(50, "jpy") is None
    assert amount_problem(1250, "kwd") is None


@pytest.mark.parametrize(
    ("amount", "currency", "fragment"),
    [
        (49, "usd", "between 50"),
        (MAX_AMOUNT + 1, "usd", "between"),
        (0, "usd", "between"),
        (-100, "usd", "between"),
        (True, "usd", "integer"),
        (10.5, "usd", "integer"),
        ("100", "usd", "integer"),
        (None, "usd", "integer"),
        (1255, "kwd", "end in 0"),
        (499, "krw", "between 500"),
    ],
)
def test_amount_problems(amount: object, currency: str, fragment: str) -> None:
    problem = amount_problem(amount, currency)
    assert problem is not None
    assert fragment in problem


def test_min_amount_per_currency() -> None:
    assert min_amount("usd") == 50
    assert min_amount("KRW") == 500


def test_round_half_up_rounds_halves_away_from_zero() -> None:
    assert round_half_up(Decimal("2.5")) == 3
    assert round_half_up(Decimal("3.5")) == 4
    assert round_half_up(Decimal("2.49")) == 2
    assert round_half_up(Decimal("-2.5")) == -3
