"""Webhook delivery: a thread that POSTs signed events, retrying like Stripe (faster).

Each attempt is signed afresh (``Stripe-Signature: t=<ts>,v1=<hmac>``, as
docs.stripe.com/webhooks#verify-manually describes), so a retry an hour later
would still pass a 300 s tolerance. A delivery succeeds on any 2xx; anything
else, including a connection error, is retried after the next ``retry_delays``
entry until they run out (Stripe retries for 3 days; tests want milliseconds).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from gateway.sandbox.state import SandboxState

log = logging.getLogger(__name__)

DEFAULT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)


def sign(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header value for ``payload``."""
    ts = int(time.time()) if timestamp is None else timestamp
    body = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    mac = hmac.new(secret.encode("utf-8"), f"{ts}.{body}".encode(), hashlib.sha256)
    return f"t={ts},v1={mac.hexdigest()}"


@dataclass(order=True, slots=True)
class _Delivery:
    due: float
    seq: int
    event_id: str = field(compare=False)
    payload: str = field(compare=False)
    attempt: int = field(compare=False, default=0)


class WebhookDispatcher:
    """Queue + thread delivering the state's events to ``state.webhook_url``."""

    def __init__(
        self,
        state: SandboxState,
        secret: str,
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        timeout: float = 10.0,
        deliver_twice: bool = False,
        shuffle: bool = False,
        shuffle_window: float = 0.05,
        seed: int | None = None,
    ) -> None:
        self.state = state
        self.secret = secret
        self.retry_delays = tuple(retry_delays)
        self.timeout = timeout
        # Test switches, settable at any time.
        self.deliver_twice = deliver_twice
        self.shuffle = shuffle
        self.shuffle_window = shuffle_window
        self._rng = random.Random(seed)  # noqa: S311 - seeded, reproducible faults
        self._cond = threading.Condition()
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.attempts: list[tuple[str, int, int | None]] = []  # (event id, attempt, status)

    # Called by SandboxState.emit under the state lock: only queue, never block.
    def on_event(self, event: dict[str, Any]) -> None:
        if not self.state.webhook_url:
            return
        payload = json.dumps(event, indent=2)
        now = time.monotonic()
        due = now + (self.shuffle_window if self.shuffle else 0.0)
        with self._cond:
            for _ in range(2 if self.deliver_twice else 1):
                heapq.heappush(self._heap, _Delivery(due, next(self._seq), event["id"], payload))
            self._cond.notify_all()

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop delivering (queued deliveries are dropped) and join the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def pause(self) -> None:
        """Hold deliveries (they queue up) until ``resume``."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._heap) + self._in_flight

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """True once nothing is queued, scheduled for retry or being delivered."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._heap and not self._in_flight, timeout)

    def _next(self) -> _Delivery | None:
        """Block until a delivery is due (None when stopping)."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                now = time.monotonic()
                if self._heap and not self._paused and self._heap[0].due <= now:
                    if self.shuffle:
                        due = [i for i, d in enumerate(self._heap) if d.due <= now]
                        idx = self._rng.choice(due)
                        item = self._heap.pop(idx)
                        heapq.heapify(self._heap)
                    else:
                        item = heapq.heappop(self._heap)
                    self._in_flight += 1
                    return item
                wait = None
                if self._heap and not self._paused:
                    wait = max(0.0, self._heap[0].due - now)
                self._cond.wait(wait)

    def _run(self) -> None:
        with requests.Session() as session:
            while (item := self._next()) is not None:
                try:
                    ok = self._deliver(session, item)
                except Exception:  # pragma: no cover - a bug here must not kill the thread
                    log.exception("webhook delivery crashed")
                    ok = False
                self.state.record_delivery(item.event_id, ok)
                with self._cond:
                    self._in_flight -= 1
                    if not ok and item.attempt < len(self.retry_delays) and not self._stopping:
                        item.due = time.monotonic() + self.retry_delays[item.attempt]
                        item.attempt += 1
                        item.seq = next(self._seq)
                        heapq.heappush(self._heap, item)
                    self._cond.notify_all()

    def _deliver(self, session: requests.Session, item: _Delivery) -> bool:
        url = self.state.webhook_url
        if not url:
            return False
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": sign(item.payload, self.secret),
        }
        status: int | None = None
        try:
            resp = session.post(
                url, data=item.payload.encode("utf-8"), headers=headers, timeout=self.timeout
            )
            status = resp.status_code
            resp.close()
        except requests.RequestException as exc:
            log.info(
                "webhook %s attempt %d to %s failed: %s", item.event_id, item.attempt + 1, url, exc
            )
        with self._cond:
            self.attempts.append((item.event_id, item.attempt + 1, status))
        return status is not None and 200 <= status < 300
