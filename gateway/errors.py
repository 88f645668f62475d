"""Exceptions that cross module boundaries, named by whose fault they are (STYLE §8)."""

from __future__ import annotations


class StorageError(Exception):
    """The ledger could not durably store or read something (locked, disk full, read-only).

    The webhook answers 503 on it so Stripe retries; the message is safe to log.
    """


class StripeError(Exception):
    """A Stripe call failed. The message never holds a secret."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code
        self.message = message
        self.status = status


class TransientStripeError(StripeError):
    """Network error, timeout, 409 idempotency_key_in_use, 429 or 5xx: retry later."""


class PermanentStripeError(StripeError):
    """Stripe refused the request (other 4xx): retrying the same request will not help."""
