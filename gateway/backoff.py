"""Exponential backoff with jitter, for work that is retried from the ledger."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempts: int,
    base: float = 2.0,
    cap: float = 600.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before try number ``attempts + 1``: base * 2**attempts, capped.

    "Equal jitter": between half the step and the full step, so several gateways
    (or several deferred transfers) that failed together do not retry in lockstep,
    and a retry never comes sooner than half the nominal step.
    """
    step = min(cap, base * 2.0 ** min(max(attempts, 0), 32))
    return step / 2 + rand() * step / 2
