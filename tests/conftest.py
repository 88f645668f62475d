"""Generic fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import stripe

if TYPE_CHECKING:
    from gateway.ledger import Ledger


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the long variants of the reliability suites (marked slow)",
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh SQLite ledger in the test's temp dir, closed afterwards."""
    from gateway.ledger import Ledger  # imported lazily: not every test needs SQLAlchemy

    led = Ledger.open(f"sqlite:///{tmp_path}/l.sqlite3")
    yield led
    led.close()


@pytest.fixture(autouse=True)
def fast_stripe_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """stripe-python sleeps >= 0.5 s between its own retries; the behaviour is the same faster."""
    monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)
    monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.02)
