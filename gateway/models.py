"""Records and statuses of the ledger: the vocabulary shared by gateway and desktop."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.fees import FeeSource


class EventStatus(enum.StrEnum):
    PENDING = "pending"  # in the inbox, not yet handled
    PROCESSED = "processed"  # handled (the charge was updated)
    IGNORED = "ignored"  # a type URSUS does not act on; kept
    FAILED = "failed"  # could not be handled (bad payload); kept with last_error


class TransferStatus(enum.StrEnum):
    """Status of a charge's one vendor transfer. NONE: no transfer row yet."""

    NONE = "none"  # not due yet (not captured, awaiting the actual fee, ...)
    PENDING = "pending"  # due: the processor will (re)try creating it
    CREATED = "created"  # Stripe created it; transfer_id is known
    FAILED = "failed"  # Stripe refused it permanently; error code/message kept
    REVERSED = "reversed"  # reversed (fully) after a refund, when enabled


class TimelineKind(enum.StrEnum):
    """Entries of a charge's history, shown in the desktop's detail pane."""

    EVENT = "event"  # a webhook event about the charge was received
    CHARGE = "charge"  # the charge was re-fetched from Stripe
    FEE = "fee"  # the split was computed
    TRANSFER_REQUEST = "transfer_request"
    TRANSFER_CREATED = "transfer_created"
    TRANSFER_ERROR = "transfer_error"
    TRANSFER_RETRY = "transfer_retry"  # a person asked for a retry
    REFUND = "refund"
    REVERSAL = "reversal"


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """One stored webhook event (the raw body is what Stripe signed)."""

    seq: int
    event_id: str
    type: str
    created: int  # Stripe's event.created, UTC epoch seconds
    livemode: bool
    object_id: str  # data.object.id (ch_..., pi_..., tr_...)
    raw: bytes
    received_at: float  # UTC epoch seconds
    status: EventStatus
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class ChargeSnapshot:
    """What URSUS keeps of a charge re-fetched from Stripe."""

    charge_id: str
    payment_intent_id: str
    order_id: str
    currency: str
    amount: int  # gross, minor units
    amount_refunded: int
    captured: bool
    paid: bool
    status: str  # Stripe's charge.status
    created: int  # UTC epoch seconds
    livemode: bool
    transfer_group: str
    balance_transaction_id: str  # "" while unknown
    actual_fee: int | None  # from the balance transaction; None = not known yet


@dataclass(frozen=True, slots=True)
class ChargeView:
    """One row of the payments table / CSV export: a charge with its split and transfer."""

    seq: int  # ledger insertion order, stable key for paging
    charge_id: str
    payment_intent_id: str
    order_id: str
    currency: str
    gross: int
    amount_refunded: int
    captured: bool
    created: int
    livemode: bool
    stripe_fee: int | None  # None until a split was computed
    fee_source: FeeSource | None
    commission: int | None
    transfer_amount: int | None
    transfer_id: str
    transfer_status: TransferStatus
    error_code: str
    error_message: str

    @property
    def net(self) -> int | None:
        return None if self.stripe_fee is None else self.gross - self.stripe_fee


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    charge_id: str
    at: float  # UTC epoch seconds
    kind: TimelineKind
    detail: str  # human-readable, never a secret or a raw payload


@dataclass(frozen=True, slots=True)
class ChargeFilter:
    """What the payments table and the export select. Empty fields select all."""

    text: str = ""  # substring of order id, charge id or payment intent id
    statuses: frozenset[TransferStatus] = frozenset()
    since: int | None = None  # created >= since (UTC epoch seconds)
    until: int | None = None  # created < until


@dataclass(frozen=True, slots=True)
class Totals:
    """Sums over a filter, per currency (mixing currencies would be wrong)."""

    currency: str
    count: int
    gross: int
    stripe_fee: int
    commission: int
    transferred: int  # transfers with status CREATED
    refunded: int


@dataclass(frozen=True, slots=True)
class Counts:
    """Header figures of the window."""

    charges: int
    pending_transfers: int
    failed_transfers: int
    pending_events: int


@dataclass(frozen=True, slots=True)
class DueTransfer:
    """A transfer the processor should (re)try to create at Stripe now."""

    charge_id: str
    amount: int
    currency: str
    destination: str
    transfer_group: str
    idempotency_key: str
    attempts: int
    metadata: dict[str, str]
