"""Catch up on charge events Stripe could not deliver while the gateway was down.

Stripe retries a failed live delivery for 3 days, but a desktop closed for a
long weekend, or a tunnel that changed its URL, can miss them for good. At
start-up the gateway lists the events whose delivery has not succeeded
(``delivery_success=false``; Stripe keeps 30 days of events) and puts the charge
events into the inbox like any webhook. The inbox's UNIQUE(event_id) makes an
event that also arrives by webhook a no-op; the processor re-fetches the charge
either way, so an event read from the API (authenticated by our own key over
TLS rather than signed) is as good a trigger as a signed one.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.processor import CHARGE_EVENTS

if TYPE_CHECKING:
    from gateway.ledger import Ledger
    from gateway.stripe_api import StripeGateway

log = logging.getLogger(__name__)

# 50 pages of 100: more undelivered charge events than a small merchant makes in 30 days.
MAX_PAGES = 50


@dataclass(frozen=True, slots=True)
class CatchUpResult:
    listed: int  # undelivered charge events Stripe listed
    recorded: int  # of those, new to the inbox
    complete: bool  # False if stopped early or the page cap was reached


def catch_up(
    ledger: Ledger,
    stripe: StripeGateway,
    *,
    stop: threading.Event | None = None,
    max_pages: int = MAX_PAGES,
) -> CatchUpResult:
    """Record undelivered charge events in the inbox, oldest first.

    Raises the StripeError of a failed listing (nothing is recorded then) and
    StorageError if the inbox cannot be written.
    """
    pages: list[list[dict[str, Any]]] = []
    starting_after: str | None = None
    complete = False
    for _ in range(max_pages):
        if stop is not None and stop.is_set():
            break
        events, has_more = stripe.list_events(
            sorted(CHARGE_EVENTS), delivery_success=False, starting_after=starting_after
        )
        pages.append(events)
        if not has_more or not events:
            complete = True
            break
        starting_after = str(events[-1]["id"])

    listed = recorded = 0
    # Stripe lists newest first; the inbox should hold them in the order they happened.
    for event in (e for page in reversed(pages) for e in reversed(page)):
        listed += 1
        data = event.get("data") or {}
        obj = data.get("object") or {}
        raw = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        if ledger.record_event(
            str(event["id"]),
            str(event["type"]),
            int(event.get("created") or 0),
            bool(event.get("livemode")),
            str(obj.get("id") or ""),
            raw,
        ):
            recorded += 1
    if recorded:
        log.info("catch-up: %d of %d undelivered charge events were new", recorded, listed)
    else:
        log.info("catch-up: nothing missed (%d undelivered charge events listed)", listed)
    return CatchUpResult(listed=listed, recorded=recorded, complete=complete)
