"""Fault injection for the sandbox's API: errors, dropped connections, latency.

A ``FaultPlan`` is consulted once per API request (never for the sandbox's
own webhook deliveries, which go the other way). Rules match a method and a
glob on the path (``/v1/transfers*``) and fail a seeded-random fraction of the
matching requests; ``fail_next`` queues deterministic one-off faults. Both
can be changed while the sandbox runs.
"""

from __future__ import annotations

import enum
import fnmatch
import random
import threading
from collections import deque
from dataclasses import dataclass


class FaultKind(enum.StrEnum):
    """What an injected fault does to one request."""

    ERROR_500 = "500"  # api_error, before the request is processed
    ERROR_429 = "429"  # rate_limit / lock_timeout, before processing
    RESET = "reset"  # connection closed without an answer, request not processed
    RESET_AFTER = "reset_after"  # request processed, then the answer is lost
    SLOW = "slow"  # sleep slow_seconds, then answer normally


@dataclass(frozen=True, slots=True)
class FaultRule:
    """Fail ``rate`` of the requests matching ``method`` and ``path`` with ``kind``."""

    path: str
    kind: FaultKind
    rate: float
    method: str | None = None  # None: any method

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method.upper()) and (
            fnmatch.fnmatchcase(path, self.path)
        )


class FaultPlan:
    """Seeded, thread-safe plan of which API requests fail and how."""

    def __init__(
        self,
        seed: int | None = None,
        *,
        latency: float = 0.0,
        slow_seconds: float = 1.0,
        should_retry_header: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - seeded, reproducible faults
        self._rules: list[FaultRule] = []
        self._queued: deque[tuple[str, str | None, FaultKind]] = deque()
        # Global latency added to every API request, seconds.
        self.latency = latency
        self.slow_seconds = slow_seconds
        # Stripe sends ``Stripe-Should-Retry: true`` on lock timeouts; the stripe
        # client only retries a 429 that carries it (stripe/_http_client.py).
        self.should_retry_header = should_retry_header
        self.injected: list[tuple[str, str, FaultKind]] = []

    def seed(self, seed: int) -> None:
        with self._lock:
            self._rng.seed(seed)

    def add(
        self,
        path: str,
        *,
        error_500: float = 0.0,
        error_429: float = 0.0,
        reset: float = 0.0,
        reset_after: float = 0.0,
        slow: float = 0.0,
        method: str | None = None,
    ) -> None:
        """Fail fractions of the requests to ``path`` (a glob); the rates add up."""
        rates = {
            FaultKind.ERROR_500: error_500,
            FaultKind.ERROR_429: error_429,
            FaultKind.RESET: reset,
            FaultKind.RESET_AFTER: reset_after,
            FaultKind.SLOW: slow,
        }
        if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1:
            raise ValueError("fault rates must be >= 0 and add up to at most 1")
        with self._lock:
            for kind, rate in rates.items():
                if rate:
                    self._rules.append(FaultRule(path, kind, rate, method))

    def fail_next(
        self, path: str, kind: FaultKind | str, count: int = 1, *, method: str | None = None
    ) -> None:
        """The next ``count`` requests matching ``path`` fail with ``kind`` (before rules)."""
        with self._lock:
            for _ in range(count):
                self._queued.append((path, method, FaultKind(kind)))

    def clear(self) -> None:
        """No more faults (latency too back to 0)."""
        with self._lock:
            self._rules.clear()
            self._queued.clear()
            self.latency = 0.0

    @property
    def rules(self) -> tuple[FaultRule, ...]:
        with self._lock:
            return tuple(self._rules)

    def decide(self, method: str, path: str) -> FaultKind | None:
        """The fault for this request, or None; records what was injected."""
        with self._lock:
            kind = self._decide(method, path)
            if kind is not None:
                self.injected.append((method, path, kind))
            return kind

    def _decide(self, method: str, path: str) -> FaultKind | None:
        for i, (pattern, meth, kind) in enumerate(self._queued):
            if fnmatch.fnmatchcase(path, pattern) and (meth is None or meth.upper() == method):
                del self._queued[i]
                return kind
        matching = [r for r in self._rules if r.matches(method, path)]
        if not matching:
            return None
        roll = self._rng.random()
        for rule in matching:
            if roll < rule.rate:
                return rule.kind
            roll -= rule.rate
        return None
