"""IngestGauge: how many webhook deliveries are in flight, so the processor can defer to them.

Stripe waits on every delivery's response, times slow ones out and retries
them; a transfer made a fraction of a second later costs nobody anything. The
webhook path and the processor share one process and, in CPython, one GIL: a
processor working through a backlog at full speed takes about half the CPU from
a burst of deliveries. So during a burst the processor waits before each unit of
work that calls Stripe, at most 200 ms, so that it always makes progress (at
least ~5 units a second however long the burst).

A burst is several deliveries in the handler at once, or many started within a
short window (most of a delivery's time is spent in waitress before and after
the handler, where it cannot be counted). One sale brings ~5 events within a
few milliseconds: that is not a burst, and the sale's transfer is not delayed.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable

BURST = 4  # deliveries in flight at once: Stripe is sending a burst
RECENT = 8  # ... or this many started within WINDOW seconds (>= 400/s)
WINDOW = 0.02
MAX_WAIT = 0.2  # seconds the processor gives way per unit of work, at most
POLL = 0.002


class IngestGauge:
    """Counts webhook deliveries being handled; ``yield_to_ingest()`` waits out a burst."""

    def __init__(
        self,
        burst: int = BURST,
        max_wait: float = MAX_WAIT,
        recent: int = RECENT,
        window: float = WINDOW,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Lock-free (every delivery passes here; a lock is a GIL handover under load):
        # monotonic counters from itertools.count, whose next() is atomic in CPython. A
        # late store can undercount for an instant; it never drifts.
        self._entered = itertools.count(1)
        self._exited = itertools.count(1)
        self._last_entered = 0
        self._last_exited = 0
        self._burst = burst
        self._window = window
        self._recent = max(1, recent)
        self._starts: deque[float] = deque(maxlen=self._recent)
        self._max_wait = max_wait
        self._sleep = sleep
        self._clock = clock
        self.waited = 0.0  # seconds the processor gave way in all (benchmarks, tests)

    def __enter__(self) -> IngestGauge:
        self._last_entered = next(self._entered)
        self._starts.append(self._clock())  # deque.append is atomic
        return self

    def __exit__(self, *exc: object) -> None:
        self._last_exited = next(self._exited)

    @property
    def in_flight(self) -> int:
        return max(0, self._last_entered - self._last_exited)

    def bursting(self) -> bool:
        """Many deliveries at once, or in quick succession."""
        if self.in_flight >= self._burst:
            return True
        starts = self._starts
        if len(starts) < self._recent:
            return False
        return self._clock() - starts[0] < self._window  # the oldest of the last ``recent``

    def yield_to_ingest(self) -> float:
        """While a burst is in flight, wait (at most ``max_wait``); the seconds waited."""
        if not self.bursting():
            return 0.0
        start = self._clock()
        deadline = start + self._max_wait
        while self.bursting():
            now = self._clock()
            if now >= deadline:
                break
            self._sleep(min(POLL, deadline - now))
        waited = self._clock() - start
        self.waited += waited
        return waited
