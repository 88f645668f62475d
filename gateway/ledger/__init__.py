"""The ledger: single source of truth for events, charges, transfers and refunds."""

from __future__ import annotations

from gateway.ledger.core import DEFAULT_BUSY_TIMEOUT_MS, Ledger
from gateway.ledger.schema import SCHEMA_VERSION

__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "SCHEMA_VERSION", "Ledger"]
