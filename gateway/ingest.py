"""IngestGauge: how many webhook deliveries are in flight, so the processor can defer to them.

Stripe waits on every delivery's response, times slow ones out and retries
them; a transfer made 50 ms later costs nobody anything. The webhook path and
the processor share one process and, in CPython, one GIL: a processor working
through a backlog at full speed takes about half the CPU from a burst of
deliveries. So during a burst (several deliveries at once) the processor waits
briefly before each unit of work, bounded, so that it always makes progress.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

BURST = 4  # deliveries in flight at once: Stripe is sending a burst
MAX_WAIT = 0.05  # seconds the processor gives way per unit of work, at most
POLL = 0.002


class IngestGauge:
    """Counts webhook deliveries being handled; ``yield_to_ingest()`` waits out a burst."""

    def __init__(
        self,
        burst: int = BURST,
        max_wait: float = MAX_WAIT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._burst = burst
        self._max_wait = max_wait
        self._sleep = sleep
        self._clock = clock
        self.waited = 0.0  # seconds the processor gave way in all (benchmarks, tests)

    def __enter__(self) -> IngestGauge:
        with self._lock:
            self._in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def yield_to_ingest(self) -> float:
        """While a burst is in flight, wait (at most ``max_wait``); the seconds waited."""
        if self._in_flight < self._burst:
            return 0.0
        start = self._clock()
        deadline = start + self._max_wait
        while self._in_flight >= self._burst:
            now = self._clock()
            if now >= deadline:
                break
            self._sleep(min(POLL, deadline - now))
        waited = self._clock() - start
        self.waited += waited
        return waited
