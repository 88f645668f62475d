"""URSUS gateway: the headless Stripe Connect engine (no Qt, ever)."""

from __future__ import annotations

__version__ = "0.1.0"
