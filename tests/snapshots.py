"""A ChargeSnapshot for tests: a captured, paid 100.00 USD charge unless told otherwise."""

from __future__ import annotations

import dataclasses

from gateway.models import ChargeSnapshot


def charge_snapshot(charge_id: str = "ch_1", **changes: object) -> ChargeSnapshot:
    """``charge_id``'s snapshot; ``changes`` replaces fields (``created=``, ``actual_fee=``)."""
    suffix = charge_id[3:]
    base = ChargeSnapshot(
        charge_id=charge_id,
        payment_intent_id=f"pi_{suffix}",
        order_id=f"order-{suffix}",
        currency="usd",
        amount=10000,
        amount_refunded=0,
        captured=True,
        paid=True,
        status="succeeded",
        created=1_780_000_000,
        livemode=False,
        transfer_group=f"order-{suffix}",
        balance_transaction_id="",
        actual_fee=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
