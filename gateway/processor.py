"""Processor: the background thread that turns inbox events into exactly one transfer per charge.

Events are triggers, not data: each charge event makes the processor re-fetch the
charge from Stripe (so out-of-order and stale payloads stop mattering), store it,
work out the split and queue the transfer in the ledger; a separate step creates
due transfers at Stripe. All state lives in the ledger, so pending work resumes
after a restart, and the deterministic idempotency key plus the ledger's one
transfer row per charge keep several processors (or instances) from paying twice.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from gateway.backoff import backoff_delay
from gateway.config import FeeSourcePolicy, GatewayConfig
from gateway.errors import (
    PermanentStripeError,
    StorageError,
    StripeError,
    TransientStripeError,
)
from gateway.fees import FeeSource, FeeSplit, split
from gateway.ingest import IngestGauge
from gateway.models import (
    ChargeSnapshot,
    DueTransfer,
    EventStatus,
    InboxEvent,
    TimelineKind,
    TransferStatus,
)
from gateway.money import round_half_up, to_major

if TYPE_CHECKING:
    from gateway.ledger import Ledger
    from gateway.ledger.unit import Unit
    from gateway.stripe_api import RefundInfo, ReversalInfo

log = logging.getLogger(__name__)

# Event types that make the processor look at a charge (DESIGN §2).
CHARGE_EVENTS = frozenset(
    {"charge.succeeded", "charge.captured", "charge.updated", "charge.refunded"}
)
TRANSFER_KEY_PREFIX = "ursus-transfer-"
RETRY_KEY_MARK = "-retry"  # Ledger.retry_transfer's keys: ursus-transfer-<charge>-retry<N>
ZERO_AMOUNT_CODE = "amount_too_small"

# Backoff of deferred events and transfers: 2 s doubling to 10 min, with jitter.
RETRY_BASE = 2.0
RETRY_CAP = 600.0
# Re-checks of a missing actual fee: charge.updated normally brings it first.
FEE_CHECK_MIN = 5.0
FEE_CHECK_MAX = 120.0


class StripeCalls(Protocol):
    """The part of StripeGateway the processor uses (a fake implements the same)."""

    def retrieve_charge(self, charge_id: str) -> ChargeSnapshot: ...

    def create_transfer(self, t: DueTransfer, *, from_charge: bool = True) -> str: ...

    def find_transfer(self, transfer_group: str, charge_id: str) -> str | None: ...

    def create_reversal(self, transfer_id: str, amount: int, idempotency_key: str) -> str: ...

    def list_reversals(self, transfer_id: str) -> list[ReversalInfo]: ...

    def list_refunds(self, charge_id: str) -> list[RefundInfo]: ...


class _Defer(Exception):
    """Handling an event must wait (Stripe unreachable, transfer not created yet)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class _Notes(list[tuple[str, tuple[object, ...]]]):
    """Log lines of a step, written after its unit committed.

    They then report what was stored, and no log I/O runs while the unit holds the
    database's write lock (the webhook's inserts wait for it).
    """

    def info(self, msg: str, *args: object) -> None:
        self.append((msg, args))

    def emit(self) -> None:
        for msg, args in self:
            log.info(msg, *args)
        self.clear()


def transfer_key(charge_id: str) -> str:
    """The deterministic idempotency key of a charge's first transfer attempt."""
    return f"{TRANSFER_KEY_PREFIX}{charge_id}"


def charge_id_of(event: InboxEvent) -> str:
    """The charge id an event is about; ValueError if the payload does not say."""
    try:
        payload = json.loads(event.raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"payload is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise ValueError("payload has no data.object")
    object_id = obj.get("id")
    if not isinstance(object_id, str) or not object_id.startswith(("ch_", "py_")):
        raise ValueError(f"data.object.id is not a charge id: {str(object_id)[:40]!r}")
    if obj.get("object", "charge") != "charge":
        raise ValueError(f"data.object is a {str(obj.get('object'))[:40]!r}, not a charge")
    return object_id


def describe_split(s: FeeSplit) -> str:
    c = s.currency
    return (
        f"gross {to_major(s.gross, c)} {c.upper()}: Stripe fee {to_major(s.stripe_fee, c)} "
        f"({s.fee_source}), commission {to_major(s.commission, c)}, "
        f"transfer {to_major(s.transfer, c)}"
    )


class Processor:
    """Background worker: inbox events -> charge re-fetch -> fee split -> one transfer."""

    def __init__(
        self,
        ledger: Ledger,
        stripe: StripeCalls,
        config: GatewayConfig,
        clock: Callable[[], float] = time.time,
        *,
        poll_interval: float = 1.0,
        batch: int = 100,
        rand: Callable[[], float] = random.random,
        ingest: IngestGauge | None = None,
    ) -> None:
        self._ledger = ledger
        self._stripe = stripe
        self._config = config
        self._clock = clock
        self._poll_interval = poll_interval
        self._batch = batch
        self._rand = rand
        self._ingest = ingest  # webhook deliveries in flight: a burst goes first
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pass_lock = threading.Lock()  # one pass at a time (thread vs run_once)
        # Events of the current batch to mark IGNORED: written with the batch's next unit
        # (or one at its end) instead of a commit each.
        self._ignored: list[InboxEvent] = []
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the daemon thread (it does a pass at once: pending work resumes)."""
        if self.is_running:
            return
        self._stopping.clear()
        self._wake.set()
        self._thread = threading.Thread(target=self._run, name="ursus-processor", daemon=True)
        self._thread.start()
        log.info("processor started")

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current item, then end the thread (joined up to ``timeout``)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            # A Stripe call is still in flight; it is a daemon thread and the ledger
            # holds everything needed to finish the work on the next start.
            log.warning("processor did not stop within %.1fs", timeout)
        else:
            self._thread = None
            log.info("processor stopped")

    def wake(self) -> None:
        """Ask for a pass now (thread-safe; the webhook calls it after storing an event)."""
        # Already set: a pass is due anyway. Event.set() takes a lock and notifies, which
        # every webhook thread of a burst would otherwise contend for.
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the pass: a wake() during the pass triggers another.
            self._wake.clear()
            try:
                self.run_once()
            except Exception:
                # A storage hiccup or a bug must not end the thread; the work is
                # still in the ledger and the next pass retries it.
                log.exception("processor pass failed")
            if self._stopping.is_set():
                break
            self._wake.wait(self._poll_interval)

    # -- one pass ------------------------------------------------------------------

    def run_once(self) -> int:
        """Do all work that is due now, once; returns how many items were handled.

        Work goes in rounds of one batch of events, then the due fee checks and
        transfers, so a steady inflow of events never starves the transfers.
        """
        with self._pass_lock:
            seen: set[str] = set()
            total = 0
            while True:
                done = self._events(seen)
                done += self._fee_checks()
                done += self._transfers()
                total += done
                if not done or self._stop_requested():
                    return total

    def _give_way(self) -> None:
        """Before each item: let a burst of webhook deliveries go first (bounded wait)."""
        if self._ingest is not None:
            self._ingest.yield_to_ingest()

    def _stop_requested(self) -> bool:
        # Only the thread ends its pass early; a run_once() elsewhere (CLI) finishes.
        return self._stopping.is_set() and threading.current_thread() is self._thread

    def _events(self, seen: set[str]) -> int:
        """One batch of pending events; ``seen`` (per pass) keeps a stuck event from looping."""
        done = 0
        batch = [
            e
            for e in self._ledger.pending_events(self._batch, self._clock())
            if e.event_id not in seen
        ]
        self._ignored = []
        for event in batch:
            if self._stop_requested():
                break
            if event.type in CHARGE_EVENTS:  # the others cost no Stripe call: no wait
                self._give_way()
            seen.add(event.event_id)
            try:
                self._handle_event(event)
            except StorageError:
                raise  # the database is unwell: end the pass, the loop retries
            except Exception as exc:
                # A bug must not block the inbox behind one event: keep the event
                # (pending, with the error) and retry it with backoff.
                log.exception("event %s type=%s: internal error", event.event_id, event.type)
                delay = backoff_delay(event.attempts, RETRY_BASE, RETRY_CAP, self._rand)
                self._ledger.defer_event(
                    event.event_id,
                    f"internal error: {type(exc).__name__}",
                    self._clock() + delay,
                )
            done += 1
        if self._ignored:
            with self._step():
                pass
        return done

    @contextmanager
    def _step(self) -> Iterator[Unit]:
        """A ledger unit that also marks the batch's ignored events seen so far."""
        ignored = self._ignored
        with self._ledger.unit() as u:
            for event in ignored:
                u.mark_event(event.event_id, EventStatus.IGNORED)
            yield u
        # Committed: a rolled-back unit leaves them for the next one (or the batch's end).
        self._ignored = []
        for event in ignored:
            log.info("event %s type=%s ignored", event.event_id, event.type)

    def _fee_checks(self) -> int:
        done = 0
        now = self._clock()
        for charge_id in self._ledger.charges_awaiting_fee(now, self._batch):
            if self._stop_requested():
                break
            self._give_way()
            try:
                self._check_fee(charge_id)
            except StorageError:
                raise
            except Exception:
                log.exception("charge %s fee check: internal error", charge_id)
                self._ledger.defer_fee_check(charge_id, self._clock() + FEE_CHECK_MAX)
            done += 1
        return done

    def _transfers(self) -> int:
        done = 0
        for due in self._ledger.due_transfers(self._clock(), self._batch):
            if self._stop_requested():
                break
            self._give_way()
            try:
                self._create_transfer(due)
            except StorageError:
                raise
            except Exception as exc:
                log.exception("transfer charge=%s: internal error", due.charge_id)
                delay = backoff_delay(due.attempts, RETRY_BASE, RETRY_CAP, self._rand)
                # attempts + 1: the next try looks for a transfer at Stripe first.
                self._ledger.transfer_deferred(
                    due.charge_id, f"internal error: {type(exc).__name__}", self._clock() + delay
                )
            done += 1
        return done

    # -- events ----------------------------------------------------------------------

    def _handle_event(self, event: InboxEvent) -> None:
        ledger = self._ledger
        if event.type not in CHARGE_EVENTS:
            self._ignored.append(event)  # marked with the next unit: see _step
            return
        try:
            charge_id = charge_id_of(event)
        except ValueError as exc:
            ledger.mark_event(event.event_id, EventStatus.FAILED, f"unreadable event: {exc}")
            log.warning("event %s type=%s failed: unreadable: %s", event.event_id, event.type, exc)
            return
        try:
            self._handle_charge_event(event, charge_id)
        except _Defer as defer:
            delay = defer.delay
            if delay is None:
                delay = backoff_delay(event.attempts, RETRY_BASE, RETRY_CAP, self._rand)
            ledger.defer_event(event.event_id, defer.reason, self._clock() + delay)
            log.info(
                "event %s type=%s charge=%s deferred %.0fs: %s",
                event.event_id,
                event.type,
                charge_id,
                delay,
                defer.reason,
            )
        except PermanentStripeError as exc:
            reason = f"Stripe refused a call for {charge_id}: {exc}"
            ledger.mark_event(event.event_id, EventStatus.FAILED, reason)
            log.warning(
                "event %s type=%s charge=%s failed: %s", event.event_id, event.type, charge_id, exc
            )
        else:
            log.info("event %s type=%s charge=%s processed", event.event_id, event.type, charge_id)

    def _handle_charge_event(self, event: InboxEvent, charge_id: str) -> None:
        """Re-fetch the charge, then store the whole step in one unit (one commit)."""
        # Charge, timeline entries, split + transfer row and the event's PROCESSED commit
        # together: a crash or an error leaves none of it half done, and the retry of the
        # event redoes all of it.
        snap = self._fetch(charge_id)
        refunded = event.type == "charge.refunded"
        notes = _Notes()
        with self._step() as u:
            u.upsert_charge(snap)
            u.add_timeline(charge_id, TimelineKind.EVENT, f"{event.type} ({event.event_id})")
            u.add_timeline(charge_id, TimelineKind.CHARGE, _describe_charge(snap))
            self._settle(u, snap, notes)
            if not refunded:  # a refund's event is done once the refunds are recorded
                u.mark_event(event.event_id, EventStatus.PROCESSED)
        log.info(
            "charge %s refetched amount=%d %s captured=%s paid=%s refunded=%d fee=%s",
            charge_id,
            snap.amount,
            snap.currency,
            snap.captured,
            snap.paid,
            snap.amount_refunded,
            "unknown" if snap.actual_fee is None else snap.actual_fee,
        )
        notes.emit()
        if refunded:
            self._record_refunds(snap)
            self._ledger.mark_event(event.event_id, EventStatus.PROCESSED)

    def _fetch(self, charge_id: str) -> ChargeSnapshot:
        try:
            return self._stripe.retrieve_charge(charge_id)
        except TransientStripeError as exc:
            raise _Defer(f"re-fetch of {charge_id} failed: {exc}") from None

    # -- split and transfer row --------------------------------------------------------

    def _settle(self, u: Unit, snap: ChargeSnapshot, notes: _Notes) -> None:
        """Queue the charge's transfer once it is captured, paid and its fee is settled."""
        charge_id = snap.charge_id
        if not snap.paid or snap.status == "failed":
            notes.info("charge %s not paid (status=%s): no transfer", charge_id, snap.status)
            return
        if not snap.captured:
            # Manual capture: charge.captured will bring it back.
            notes.info("charge %s authorised, not captured: waiting for charge.captured", charge_id)
            return
        view = u.get_charge(charge_id)
        if view is not None and view.transfer_status is not TransferStatus.NONE:
            return  # the one transfer row exists: nothing more to do for this charge
        settings = self._config.settings
        schedule = settings.fee_schedule
        if settings.fee_source is FeeSourcePolicy.ESTIMATE:
            fee_split = split(snap.amount, snap.currency, schedule)
        elif snap.actual_fee is not None:
            fee_split = split(snap.amount, snap.currency, schedule, snap.actual_fee)
        else:
            now = self._clock()
            deadline = u.set_awaiting_fee(charge_id, now + settings.fee_wait_seconds)
            if deadline is not None and now < deadline:
                u.defer_fee_check(charge_id, self._next_fee_check(now, deadline))
                notes.info(
                    "charge %s awaiting actual fee for up to %.0fs", charge_id, deadline - now
                )
                return
            fee_split = self._fallback(charge_id, snap.amount, snap.currency, notes)
        self._queue_transfer(u, charge_id, fee_split, notes)

    def _fallback(self, charge_id: str, gross: int, currency: str, notes: _Notes) -> FeeSplit:
        """The estimate, flagged: the actual fee did not come within fee_wait_seconds."""
        notes.info("charge %s actual fee not known in time: estimate used", charge_id)
        return split(
            gross,
            currency,
            self._config.settings.fee_schedule,
            source=FeeSource.ESTIMATE_FALLBACK,
        )

    def _next_fee_check(self, now: float, deadline: float) -> float:
        # The longer it has waited, the longer between checks (charge.updated usually
        # brings the fee first); the last check is at the deadline.
        waited = max(0.0, now - (deadline - self._config.settings.fee_wait_seconds))
        delay = min(FEE_CHECK_MAX, max(FEE_CHECK_MIN, waited / 2)) * (0.75 + self._rand() / 4)
        return min(now + delay, deadline)

    def _check_fee(self, charge_id: str) -> None:
        """A due re-check of a charge that waits for its balance transaction."""
        ledger = self._ledger
        view = ledger.get_charge(charge_id)
        if view is None or view.transfer_status is not TransferStatus.NONE:
            return
        notes = _Notes()
        try:
            snap = self._stripe.retrieve_charge(charge_id)
        except StripeError as exc:
            now = self._clock()
            log.info("charge %s fee re-check failed: %s", charge_id, exc)
            wait = self._config.settings.fee_wait_seconds
            with ledger.unit() as u:
                deadline = u.set_awaiting_fee(charge_id, now + wait)
                if deadline is not None and now < deadline:
                    u.defer_fee_check(charge_id, self._next_fee_check(now, deadline))
                else:
                    fee_split = self._fallback(charge_id, view.gross, view.currency, notes)
                    self._queue_transfer(u, charge_id, fee_split, notes)
            notes.emit()
            return
        with ledger.unit() as u:
            u.upsert_charge(snap)
            if snap.actual_fee is not None:
                u.add_timeline(charge_id, TimelineKind.CHARGE, _describe_charge(snap))
            self._settle(u, snap, notes)
        notes.emit()

    def _queue_transfer(self, u: Unit, charge_id: str, fee_split: FeeSplit, notes: _Notes) -> None:
        created = u.create_transfer(
            charge_id,
            fee_split,
            destination=self._config.secrets.connected_account_id,
            idempotency_key=transfer_key(charge_id),
        )
        if not created:
            return  # another pass (or instance) queued it first: fine
        u.add_timeline(charge_id, TimelineKind.FEE, describe_split(fee_split))
        notes.info(
            "charge %s split gross=%d fee=%d source=%s commission=%d transfer=%d %s",
            charge_id,
            fee_split.gross,
            fee_split.stripe_fee,
            fee_split.fee_source,
            fee_split.commission,
            fee_split.transfer,
            fee_split.currency,
        )

    # -- transfers at Stripe --------------------------------------------------------------

    def _create_transfer(self, due: DueTransfer) -> None:
        ledger = self._ledger
        charge_id = due.charge_id
        if due.amount <= 0:
            # Stripe rejects a 0 transfer: a tiny charge whose fees ate everything.
            message = "nothing to transfer: the fees and commission take the whole amount"
            with ledger.unit() as u:
                u.transfer_failed(charge_id, ZERO_AMOUNT_CODE, message)
                u.add_timeline(charge_id, TimelineKind.TRANSFER_ERROR, message)
            log.info("transfer charge=%s skipped: amount 0", charge_id)
            return
        # A charge refunded (partly) before its transfer: Stripe may refuse to transfer
        # more than is left of it. The platform absorbs refunds (DESIGN §2), so the
        # vendor is still owed the whole split: a retry by hand pays it from the
        # available balance instead (its new idempotency key keeps the two apart).
        view = ledger.get_charge(charge_id)
        refunded = view.amount_refunded if view is not None else 0
        from_charge = not (refunded > 0 and RETRY_KEY_MARK in due.idempotency_key)
        request: _Entry | None = None
        try:
            if due.attempts > 0:
                # An earlier attempt may have reached Stripe before failing (a timeout
                # after the send), and Stripe forgets idempotency keys after 24 h:
                # look before paying again.
                existing = self._stripe.find_transfer(due.transfer_group, charge_id)
                if existing:
                    self._created(due, existing, "found at Stripe")
                    return
            # Stored with the outcome (one commit instead of two), timed as it began.
            request = (
                TimelineKind.TRANSFER_REQUEST,
                f"transfer {to_major(due.amount, due.currency)} {due.currency.upper()} to "
                f"{due.destination} (attempt {due.attempts + 1}"
                f"{'' if from_charge else ', from the available balance'})",
                time.time(),
            )
            transfer_id = self._stripe.create_transfer(due, from_charge=from_charge)
        except TransientStripeError as exc:
            delay = backoff_delay(due.attempts, RETRY_BASE, RETRY_CAP, self._rand)
            with ledger.unit() as u:
                _add_entry(u, charge_id, request)
                u.transfer_deferred(charge_id, str(exc), self._clock() + delay)
                u.add_timeline(
                    charge_id, TimelineKind.TRANSFER_ERROR, f"{exc} (retrying in {delay:.0f}s)"
                )
            log.info(
                "transfer charge=%s amount=%d %s deferred %.0fs attempt=%d: %s",
                charge_id,
                due.amount,
                due.currency,
                delay,
                due.attempts + 1,
                exc.code,
            )
        except PermanentStripeError as exc:
            message = exc.message
            if refunded > 0 and from_charge:
                message += (
                    " The charge was refunded before its transfer; 'Retry transfer' pays the "
                    "vendor from the platform's available balance instead."
                )
            with ledger.unit() as u:
                _add_entry(u, charge_id, request)
                u.transfer_failed(charge_id, exc.code, message)
                u.add_timeline(charge_id, TimelineKind.TRANSFER_ERROR, f"{exc.code}: {message}")
            log.warning(
                "transfer charge=%s amount=%d %s failed: %s",
                charge_id,
                due.amount,
                due.currency,
                exc,
            )
        else:
            self._created(due, transfer_id, "created", request)

    def _created(
        self, due: DueTransfer, transfer_id: str, how: str, request: _Entry | None = None
    ) -> None:
        with self._ledger.unit() as u:
            _add_entry(u, due.charge_id, request)
            u.transfer_created(due.charge_id, transfer_id)
            u.add_timeline(
                due.charge_id,
                TimelineKind.TRANSFER_CREATED,
                f"{transfer_id}: {to_major(due.amount, due.currency)} {due.currency.upper()} "
                f"to {due.destination} ({how})",
            )
        log.info(
            "transfer charge=%s transfer=%s amount=%d %s destination=%s %s",
            due.charge_id,
            transfer_id,
            due.amount,
            due.currency,
            due.destination,
            how,
        )

    # -- refunds -------------------------------------------------------------------------

    def _record_refunds(self, snap: ChargeSnapshot) -> None:
        """Record each refund of the charge (idempotent) and reverse if the setting says so."""
        charge_id = snap.charge_id
        refused: PermanentStripeError | None = None
        try:
            refunds = self._stripe.list_refunds(charge_id)
        except TransientStripeError as exc:
            raise _Defer(f"refund list of {charge_id} failed: {exc}") from None
        except PermanentStripeError as exc:
            # The cumulative amount is stored with the charge already; only the
            # per-refund rows are missing.
            log.warning("charge %s refund list refused: %s", charge_id, exc)
            refused, refunds = exc, []
        if refused is not None or refunds:
            self._store_refunds(snap, refunds, refused)
        log.info(
            "charge %s refunded total=%d %s refunds=%d",
            charge_id,
            snap.amount_refunded,
            snap.currency,
            len(refunds),
        )
        if self._config.settings.reverse_transfer_on_refund:
            self._reverse(snap)

    def _store_refunds(
        self, snap: ChargeSnapshot, refunds: list[RefundInfo], refused: StripeError | None
    ) -> None:
        """New refunds and their entries (or the note that Stripe refused the list): one unit."""
        charge_id = snap.charge_id
        with self._ledger.unit() as u:
            if refused is not None:
                u.add_timeline(
                    charge_id,
                    TimelineKind.REFUND,
                    f"{to_major(snap.amount_refunded, snap.currency)} {snap.currency.upper()} "
                    f"refunded in total (refund details unavailable: {refused})",
                )
            for refund in refunds:
                if refund.status in ("failed", "canceled"):
                    continue
                if u.record_refund(charge_id, refund.refund_id, refund.amount, refund.created):
                    u.add_timeline(
                        charge_id,
                        TimelineKind.REFUND,
                        f"{refund.refund_id}: {to_major(refund.amount, snap.currency)} "
                        f"{snap.currency.upper()} refunded "
                        f"({to_major(snap.amount_refunded, snap.currency)} in total)",
                    )

    def _reverse(self, snap: ChargeSnapshot) -> None:
        """Reverse the vendor's transfer in proportion to the refunded part of the charge."""
        charge_id = snap.charge_id
        view = self._ledger.get_charge(charge_id)
        if view is None:
            return
        status = view.transfer_status
        if status is TransferStatus.PENDING or (
            status is TransferStatus.NONE and snap.captured and snap.paid
        ):
            raise _Defer("refund waits for the transfer to exist before reversing it")
        if status not in (TransferStatus.CREATED, TransferStatus.REVERSED) or not view.transfer_id:
            log.info("charge %s refund: no transfer to reverse (%s)", charge_id, status)
            return
        transferred = view.transfer_amount or 0
        refunded = min(snap.amount_refunded, snap.amount)
        target = round_half_up(Decimal(transferred) * refunded / snap.amount) if snap.amount else 0
        try:
            existing = self._stripe.list_reversals(view.transfer_id)
            already = sum(r.amount for r in existing)
            amount = min(target, transferred) - already
            if amount <= 0:
                return
            key = f"ursus-reversal-{charge_id}-{snap.amount_refunded}"
            reversal_id = self._stripe.create_reversal(view.transfer_id, amount, key)
        except TransientStripeError as exc:
            raise _Defer(f"reversal for {charge_id} failed: {exc}") from None
        except PermanentStripeError as exc:
            self._ledger.add_timeline(charge_id, TimelineKind.REVERSAL, f"reversal refused: {exc}")
            log.warning("charge %s reversal refused: %s", charge_id, exc)
            return
        with self._ledger.unit() as u:
            u.transfer_reversed(charge_id, reversal_id, amount)
            u.add_timeline(
                charge_id,
                TimelineKind.REVERSAL,
                f"{reversal_id}: reversed {to_major(amount, snap.currency)} "
                f"{snap.currency.upper()}",
            )
        log.info(
            "charge %s reversal=%s amount=%d %s transfer=%s",
            charge_id,
            reversal_id,
            amount,
            snap.currency,
            view.transfer_id,
        )


# A timeline entry written later than it happened: (kind, detail, at).
_Entry = tuple[TimelineKind, str, float]


def _add_entry(u: Unit, charge_id: str, entry: _Entry | None) -> None:
    if entry is not None:
        kind, detail, at = entry
        u.add_timeline(charge_id, kind, detail, at)


def _describe_charge(snap: ChargeSnapshot) -> str:
    c = snap.currency
    state = "captured" if snap.captured else "authorised, not captured"
    fee = "unknown" if snap.actual_fee is None else to_major(snap.actual_fee, c)
    text = f"{to_major(snap.amount, c)} {c.upper()} {snap.status}, {state}, Stripe fee {fee}"
    if snap.amount_refunded:
        text += f", refunded {to_major(snap.amount_refunded, c)}"
    return text


# -- manual retry ---------------------------------------------------------------------------


class RetryOutcome(enum.StrEnum):
    QUEUED = "queued"  # back to pending with a new idempotency key
    ALREADY_CREATED = "already_created"  # Stripe had it: recorded, nothing paid twice
    NOT_FAILED = "not_failed"  # only failed transfers can be retried
    UNKNOWN_CHARGE = "unknown_charge"
    STRIPE_UNAVAILABLE = "stripe_unavailable"  # could not check Stripe: nothing changed


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What a manual retry did; truthy when the transfer is queued or already exists."""

    outcome: RetryOutcome
    message: str
    transfer_id: str = ""

    def __bool__(self) -> bool:
        return self.outcome in (RetryOutcome.QUEUED, RetryOutcome.ALREADY_CREATED)

    def __str__(self) -> str:
        return self.message


def retry_transfer(ledger: Ledger, stripe: StripeCalls, charge_id: str) -> RetryResult:
    """Queue a FAILED transfer again, unless Stripe already has one for the charge.

    Blocking (Stripe calls). A running processor creates the queued transfer on its
    next pass (call its ``wake()``).
    """
    view = ledger.get_charge(charge_id)
    if view is None:
        return RetryResult(RetryOutcome.UNKNOWN_CHARGE, f"no charge {charge_id} in the ledger")
    if view.transfer_status is not TransferStatus.FAILED:
        return RetryResult(
            RetryOutcome.NOT_FAILED,
            f"transfer of {charge_id} is {view.transfer_status}, not failed: nothing to retry",
        )
    try:
        snap = stripe.retrieve_charge(charge_id)
        ledger.upsert_charge(snap)
        existing = stripe.find_transfer(snap.transfer_group, charge_id)
    except StripeError as exc:
        log.warning("retry charge=%s: cannot check Stripe: %s", charge_id, exc)
        return RetryResult(
            RetryOutcome.STRIPE_UNAVAILABLE,
            f"could not check Stripe for an existing transfer, nothing changed: {exc}",
        )
    if existing:
        with ledger.unit() as u:
            u.transfer_created(charge_id, existing)
            u.add_timeline(
                charge_id,
                TimelineKind.TRANSFER_RETRY,
                f"retry asked: Stripe already has {existing}; recorded it, nothing paid twice",
            )
        log.info("retry charge=%s: found existing transfer=%s", charge_id, existing)
        return RetryResult(
            RetryOutcome.ALREADY_CREATED,
            f"Stripe already has transfer {existing} for {charge_id}: recorded",
            existing,
        )
    with ledger.unit() as u:
        queued = u.retry_transfer(charge_id)
        if queued:
            u.add_timeline(charge_id, TimelineKind.TRANSFER_RETRY, "retry asked: transfer queued")
    if not queued:
        return RetryResult(RetryOutcome.NOT_FAILED, f"transfer of {charge_id} is no longer failed")
    log.info("retry charge=%s: queued", charge_id)
    return RetryResult(RetryOutcome.QUEUED, f"transfer of {charge_id} queued again")
