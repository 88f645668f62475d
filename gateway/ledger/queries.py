"""The payments-table queries: filters, the charge view's columns, row -> ChargeView."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, true

from gateway.fees import FeeSource
from gateway.ledger.schema import charges, transfers
from gateway.models import ChargeFilter, ChargeView, TransferStatus

_TRANSFER_STATUS = {s.value: s for s in TransferStatus}
_FEE_SOURCE = {s.value: s for s in FeeSource}

# Same order as ChargeView's fields, so a row maps positionally (the export's hot loop).
VIEW_COLUMNS = (
    charges.c.seq,
    charges.c.charge_id,
    charges.c.payment_intent_id,
    charges.c.order_id,
    charges.c.currency,
    charges.c.amount,
    charges.c.amount_refunded,
    charges.c.captured,
    charges.c.created,
    charges.c.livemode,
    charges.c.stripe_fee,
    charges.c.fee_source,
    charges.c.commission,
    charges.c.transfer_amount,
    transfers.c.transfer_id,
    transfers.c.status,
    transfers.c.error_code,
    transfers.c.error_message,
)

CHARGES_WITH_TRANSFER = charges.outerjoin(transfers, transfers.c.charge_id == charges.c.charge_id)


def view_select() -> Select[Any]:
    return select(*VIEW_COLUMNS).select_from(CHARGES_WITH_TRANSFER)


def to_view(r: Sequence[Any]) -> ChargeView:
    """A ChargeView from a row of VIEW_COLUMNS."""
    fee_source = r[11]
    status = r[15]
    return ChargeView(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        bool(r[7]),
        r[8],
        bool(r[9]),
        r[10],
        _FEE_SOURCE[fee_source] if fee_source else None,
        r[12],
        r[13],
        r[14] or "",
        _TRANSFER_STATUS[status] if status else TransferStatus.NONE,
        r[16] or "",
        r[17] or "",
    )


def needs_transfer_join(f: ChargeFilter) -> bool:
    return bool(f.statuses)


def conditions(f: ChargeFilter, *, case_insensitive_like: bool) -> ColumnElement[bool]:
    """The WHERE clause of a filter (``true()`` for the empty filter).

    ``case_insensitive_like``: the dialect's LIKE already ignores ASCII case (SQLite),
    so the index-free scan skips lower() on every row.
    """
    parts: list[ColumnElement[bool]] = []
    if f.text:
        cols = (charges.c.order_id, charges.c.charge_id, charges.c.payment_intent_id)
        if case_insensitive_like:
            parts.append(or_(*(c.contains(f.text, autoescape=True) for c in cols)))
        else:
            parts.append(or_(*(c.icontains(f.text, autoescape=True) for c in cols)))
    if f.statuses:
        real = sorted(s.value for s in f.statuses if s is not TransferStatus.NONE)
        options: list[ColumnElement[bool]] = []
        if real:
            options.append(transfers.c.status.in_(real))
        if TransferStatus.NONE in f.statuses:
            options.append(transfers.c.charge_id.is_(None))
        parts.append(or_(*options))
    if f.since is not None:
        parts.append(charges.c.created >= f.since)
    if f.until is not None:
        parts.append(charges.c.created < f.until)
    return and_(*parts) if parts else true()


def count_select(f: ChargeFilter, *, case_insensitive_like: bool) -> Select[Any]:
    source = CHARGES_WITH_TRANSFER if needs_transfer_join(f) else charges
    where = conditions(f, case_insensitive_like=case_insensitive_like)
    return select(func.count()).select_from(source).where(where)
