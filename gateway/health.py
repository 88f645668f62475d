"""Stripe reachability for ``GET /health``: a cached ``ping()`` refreshed on a background thread.

``/health`` is polled by monitors and must answer in milliseconds even when
Stripe (or the network) hangs for the client's 30 s timeout, so it only ever
reads the cached result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 60.0


class Pingable(Protocol):
    """StripeGateway, or a fake: ``ping()`` answers whether Stripe accepts our key."""

    def ping(self) -> bool: ...


class HealthProbe:
    """Pings Stripe every ``interval`` seconds; ``stripe_connected`` is the last answer.

    ``stripe`` is a StripeGateway (its ``ping``) or a plain callable.
    """

    def __init__(
        self,
        stripe: Pingable | Callable[[], bool],
        interval: float = DEFAULT_INTERVAL,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ping: Callable[[], bool] = stripe.ping if hasattr(stripe, "ping") else stripe
        self._interval = interval
        self._clock = clock
        self._connected: bool | None = None
        self._checked_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def stripe_connected(self) -> bool | None:
        """True/False from the last check; None before the first one finished."""
        return self._connected

    @property
    def checked_at(self) -> float | None:
        """UTC epoch seconds of the last finished check."""
        return self._checked_at

    def refresh(self) -> bool:
        """Ping now (blocking) and cache the result; a failing ping counts as unreachable."""
        try:
            connected = bool(self._ping())
        except Exception as exc:  # ping() should not raise; if it does, Stripe is unreachable
            log.warning("Stripe health check failed: %s", type(exc).__name__)
            connected = False
        if connected != self._connected and self._connected is not None:
            log.warning("Stripe %s", "reachable again" if connected else "unreachable")
        self._connected = connected
        self._checked_at = self._clock()
        return connected

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the background refresh (the first check runs at once)."""
        with self._lock:
            if self.is_running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="stripe-health", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the refresh thread; a ping in flight is waited for up to ``timeout``."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self._interval)
