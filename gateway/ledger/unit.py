"""Unit: ledger writes that share one transaction (one commit, one fsync); see Ledger.unit."""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, case, func, select, update

from gateway.errors import StorageError
from gateway.fees import FeeSplit
from gateway.ledger import queries
from gateway.ledger import statements as st
from gateway.ledger.connections import DB_ERRORS, safe_message
from gateway.ledger.schema import charges, refunds, transfers
from gateway.models import ChargeSnapshot, ChargeView, EventStatus, TimelineKind, TransferStatus

P = ParamSpec("P")
R = TypeVar("R")

_PENDING = TransferStatus.PENDING.value


def _write_step(
    what: str,
) -> Callable[[Callable[Concatenate[Unit, P], R]], Callable[Concatenate[Unit, P], R]]:
    """A Unit method: database failures become StorageError and doom the whole unit."""

    def deco(fn: Callable[Concatenate[Unit, P], R]) -> Callable[Concatenate[Unit, P], R]:
        @functools.wraps(fn)
        def wrapper(self: Unit, *args: P.args, **kwargs: P.kwargs) -> R:
            if self._state is not None:
                self._refuse()
            self.what = what
            try:
                return fn(self, *args, **kwargs)
            except DB_ERRORS as exc:
                # SQLite may have rolled the transaction back already (disk full, I/O
                # error): nothing more may run in it, even if the caller goes on.
                self._state = safe_message(what, exc)
                raise StorageError(self._state) from exc

        return wrapper

    return deco


class Unit:
    """The writes (and reads) of one processor step inside one open write transaction.

    Made by ``Ledger.unit()``; every method is the Ledger method of the same name
    (same arguments, same result), run in the unit's transaction. Valid only inside
    the ``with`` block.
    """

    __slots__ = ("_conn", "_run", "_state", "_up", "changed", "what")

    def __init__(
        self, conn: Connection, raw: sqlite3.Connection | None, upserts: st.Upserts
    ) -> None:
        self._conn = conn
        self._run = st.Executor(None if raw is not None else conn, raw)
        self._up = upserts
        # None: usable; else why not (a failed write's message, or "finished").
        self._state: str | None = None
        self.changed = False  # some write changed a row: listeners run after the commit
        self.what = "start a write"  # for the message if the COMMIT itself fails

    # -- the unit's life (Ledger.unit) --------------------------------------------------------

    def _refuse(self) -> None:
        if self._state == "finished":
            raise RuntimeError("ledger unit used after its with-block ended")
        raise StorageError(f"{self._state} (an earlier write of this unit failed)")

    def _check_before_commit(self) -> None:
        """Raise if a write failed, even if the block swallowed the error: no half-steps."""
        if self._state is not None:
            raise StorageError(self._state)

    def _finish(self) -> None:
        self._state = "finished"

    # -- inbox ----------------------------------------------------------------------------------

    @_write_step("update an event")
    def mark_event(self, event_id: str, status: EventStatus, error: str = "") -> None:
        params = {
            "event_id": event_id,
            "new_status": EventStatus(status).value,
            "error": error,
            "now": time.time(),
        }
        if self._run.execute(st.MARK_EVENT, params):
            self.changed = True

    @_write_step("defer an event")
    def defer_event(self, event_id: str, error: str, next_attempt_at: float) -> None:
        params = {"event_id": event_id, "error": error, "next_attempt_at": next_attempt_at}
        if self._run.execute(st.DEFER_EVENT, params):
            self.changed = True

    # -- charges ----------------------------------------------------------------------------------

    @_write_step("store a charge")
    def upsert_charge(self, snapshot: ChargeSnapshot) -> None:
        s = snapshot
        params = {
            "charge_id": s.charge_id,
            "payment_intent_id": s.payment_intent_id,
            "order_id": s.order_id,
            "currency": s.currency.lower(),
            "amount": s.amount,
            "amount_refunded": s.amount_refunded,
            "captured": s.captured,
            "paid": s.paid,
            "status": s.status,
            "created": s.created,
            "livemode": s.livemode,
            "transfer_group": s.transfer_group,
            "balance_transaction_id": s.balance_transaction_id,
            "actual_fee": s.actual_fee,
            "now": time.time(),
        }
        if self._run.execute(self._up.UPSERT_CHARGE, params):
            self.changed = True

    @_write_step("read a charge")
    def get_charge(self, charge_id: str) -> ChargeView | None:
        row = self._run.first(st.GET_CHARGE, {"charge_id": charge_id})
        return None if row is None else queries.to_view(row)

    @_write_step("mark a charge as awaiting its fee")
    def set_awaiting_fee(self, charge_id: str, deadline: float) -> float | None:
        params = {"charge_id": charge_id, "deadline": deadline, "now": time.time()}
        if self._run.execute(st.SET_AWAITING_FEE, params):
            self.changed = True
        row = self._run.first(st.FEE_DEADLINE, {"charge_id": charge_id})
        return None if row is None or row[0] is None else float(row[0])

    @_write_step("defer a fee check")
    def defer_fee_check(self, charge_id: str, next_check_at: float) -> None:
        # Invisible in the window: it does not count as a change for the listeners.
        self._run.execute(
            st.DEFER_FEE_CHECK, {"charge_id": charge_id, "next_check_at": next_check_at}
        )

    # -- transfers ------------------------------------------------------------------------------

    @_write_step("create a transfer")
    def create_transfer(
        self, charge_id: str, split: FeeSplit, destination: str, idempotency_key: str
    ) -> bool:
        charge = self._run.first(st.CHARGE_FOR_TRANSFER, {"charge_id": charge_id})
        if charge is None:
            raise ValueError(f"no charge {charge_id} in the ledger")
        order_id, transfer_group, amount, currency = charge
        if split.gross != amount or split.currency.lower() != currency:
            raise ValueError(f"the split does not match charge {charge_id}")
        metadata = {
            "charge_id": charge_id,
            "order_id": order_id,
            "gross": str(split.gross),
            "stripe_fee": str(split.stripe_fee),
            "fee_source": str(split.fee_source),
            "commission": str(split.commission),
        }
        now = time.time()
        inserted = self._run.execute(
            self._up.INSERT_TRANSFER,
            {
                "charge_id": charge_id,
                "amount": split.transfer,
                "currency": split.currency.lower(),
                "destination": destination,
                "transfer_group": transfer_group,
                "idempotency_key": idempotency_key,
                # Frozen here: a retry under the same key must send identical params.
                "metadata": json.dumps(metadata, sort_keys=True),
                "now": now,
            },
        )
        if inserted != 1:
            return False
        self._run.execute(
            st.STORE_SPLIT,
            {
                "charge_id": charge_id,
                "stripe_fee": split.stripe_fee,
                "fee_source": str(split.fee_source),
                "commission": split.commission,
                "transfer_amount": split.transfer,
                "now": now,
            },
        )
        self.changed = True
        return True

    @_write_step("mark a transfer created")
    def transfer_created(self, charge_id: str, transfer_id: str) -> None:
        params = {"charge_id": charge_id, "transfer_id": transfer_id, "now": time.time()}
        if self._run.execute(st.TRANSFER_CREATED, params):
            self.changed = True

    @_write_step("defer a transfer")
    def transfer_deferred(self, charge_id: str, error: str, next_attempt_at: float) -> None:
        params = {
            "charge_id": charge_id,
            "error": error,
            "next_attempt_at": next_attempt_at,
            "now": time.time(),
        }
        if self._run.execute(st.TRANSFER_DEFERRED, params):
            self.changed = True

    @_write_step("mark a transfer failed")
    def transfer_failed(self, charge_id: str, code: str, message: str) -> None:
        params = {"charge_id": charge_id, "code": code, "message": message, "now": time.time()}
        if self._run.execute(st.TRANSFER_FAILED, params):
            self.changed = True

    # The rare paths below build their statements per call (not worth preparing).

    @_write_step("retry a transfer")
    def retry_transfer(self, charge_id: str) -> bool:
        where = (transfers.c.charge_id == charge_id) & (
            transfers.c.status == TransferStatus.FAILED.value
        )
        conn = self._conn
        retries = conn.execute(select(transfers.c.retries).where(where)).scalar()
        if retries is None:
            return False
        n = retries + 1
        changed = conn.execute(
            update(transfers)
            # retries == old: a concurrent retry (PostgreSQL) cannot double-bump.
            .where(where, transfers.c.retries == retries)
            .values(
                status=_PENDING,
                retries=n,
                # Stripe keeps a failed result under a key for 24 h: a new key.
                idempotency_key=f"ursus-transfer-{charge_id}-retry{n}",
                attempts=0,
                next_attempt_at=0.0,
                error_code="",
                error_message="",
                updated_at=time.time(),
            )
        ).rowcount
        if changed:
            self.changed = True
        return bool(changed)

    @_write_step("record a refund")
    def record_refund(self, charge_id: str, refund_id: str, amount: int, created: int) -> bool:
        conn = self._conn
        inserted = conn.execute(
            self._up.insert(refunds)
            .values(refund_id=refund_id, charge_id=charge_id, amount=amount, created=created)
            .on_conflict_do_nothing(index_elements=["refund_id"])
        ).rowcount
        if inserted != 1:
            return False
        total = (
            select(func.coalesce(func.sum(refunds.c.amount), 0))
            .where(refunds.c.charge_id == charge_id)
            .scalar_subquery()
        )
        conn.execute(
            update(charges)
            .where(charges.c.charge_id == charge_id, charges.c.amount_refunded < total)
            .values(amount_refunded=total, updated_at=time.time())
        )
        self.changed = True
        return True

    @_write_step("record a reversal")
    def transfer_reversed(self, charge_id: str, reversal_id: str, amount: int) -> None:
        t = transfers.c
        stmt = (
            update(transfers)
            .where(
                t.charge_id == charge_id,
                t.reversal_id != reversal_id,
                t.status.in_([TransferStatus.CREATED.value, TransferStatus.REVERSED.value]),
            )
            .values(
                reversal_id=reversal_id,
                reversal_amount=t.reversal_amount + amount,
                status=case(
                    (t.reversal_amount + amount >= t.amount, TransferStatus.REVERSED.value),
                    else_=t.status,
                ),
                updated_at=time.time(),
            )
        )
        if self._conn.execute(stmt).rowcount:
            self.changed = True

    # -- timeline ---------------------------------------------------------------------------------

    @_write_step("add a timeline entry")
    def add_timeline(
        self, charge_id: str, kind: TimelineKind, detail: str, at: float | None = None
    ) -> None:
        params = {
            "charge_id": charge_id,
            "at": time.time() if at is None else at,
            "kind": TimelineKind(kind).value,
            "detail": detail,
        }
        self._run.execute(st.ADD_TIMELINE, params)
        self.changed = True
