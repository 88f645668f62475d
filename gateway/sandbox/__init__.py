"""Offline Stripe simulator: a stateful fake of the Stripe API slice URSUS uses."""

from __future__ import annotations

from gateway.sandbox.faults import FaultKind, FaultPlan
from gateway.sandbox.server import SandboxServer
from gateway.sandbox.state import RecordedRequest, SandboxState, StripeError

__all__ = [
    "FaultKind",
    "FaultPlan",
    "RecordedRequest",
    "SandboxServer",
    "SandboxState",
    "StripeError",
]
