"""The processor's hot ledger statements, built once and compiled once per dialect.

Building a ``select()``/``insert()`` per call and letting SQLAlchemy derive its cache
key cost 0.2-1.2 ms of CPU per ledger call (docs/BENCHMARKS.md, "2. End to end").
Here each statement is built once at import with ``bindparam()``s; on SQLite it is
compiled once to SQL text and runs on the raw sqlite3 connection (as
``record_event`` does), on PostgreSQL the same statement object goes through
SQLAlchemy (its compiled cache).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import (
    Connection,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from gateway.ledger import queries
from gateway.ledger.schema import charges, events, timeline, transfers
from gateway.models import EventStatus, TransferStatus

Row = Sequence[Any]

_SQLITE = sqlite_dialect.dialect()
# Bind names never equal a column name: SQLAlchemy would take such an execution
# parameter of an UPDATE for a SET value. Callers pass the names without the prefix.
_PREFIX = "p_"
# (bind name or None for a constant, the constant, the type's bind processor or None)
_Slot = tuple[str | None, Any, Callable[[Any], Any] | None]


class Prepared:
    """One statement: the SQLAlchemy object, plus its SQLite text and bind order (lazy)."""

    __slots__ = ("_slots", "_sql", "sa")

    def __init__(self, sa: Executable) -> None:
        self.sa = sa
        self._sql: str | None = None
        self._slots: tuple[_Slot, ...] = ()

    def _compile_sqlite(self) -> str:
        compiled = cast(SQLCompiler, cast(ClauseElement, self.sa).compile(dialect=_SQLITE))
        sql = compiled.string
        if "POSTCOMPILE" in sql:  # an expanding IN: would need its values at compile time
            raise ValueError(f"statement needs post-compilation: {sql[:60]}")
        slots: list[_Slot] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            proc = bind.type._cached_bind_processor(_SQLITE)
            if bind.unique:  # a literal of the statement itself (a status, a 0)
                value = bind.effective_value
                slots.append((None, value if proc is None else proc(value), None))
            else:
                slots.append((name.removeprefix(_PREFIX), None, proc))
        self._slots = tuple(slots)
        self._sql = sql
        return sql

    def sqlite_args(self, params: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The SQLite text and its positional arguments for ``params``."""
        sql = self._sql or self._compile_sqlite()
        args = []
        for name, const, proc in self._slots:
            if name is None:
                args.append(const)
            else:
                value = params[name]
                args.append(value if proc is None or value is None else proc(value))
        return sql, tuple(args)


def _b(name: str) -> Any:
    return bindparam(_PREFIX + name)


class Executor:
    """Runs Prepared statements on one connection: raw sqlite3 if given, else SQLAlchemy."""

    __slots__ = ("_conn", "_raw")

    def __init__(self, conn: Connection | None, raw: sqlite3.Connection | None) -> None:
        self._conn = conn
        self._raw = raw

    def _core(self, stmt: Prepared, params: Mapping[str, Any]) -> Any:
        assert self._conn is not None
        return self._conn.execute(stmt.sa, {_PREFIX + k: v for k, v in params.items()})  # type: ignore[call-overload]

    def execute(self, stmt: Prepared, params: Mapping[str, Any]) -> int:
        """Run a write; the number of rows it changed."""
        if self._raw is not None:
            return self._raw.execute(*stmt.sqlite_args(params)).rowcount
        return int(self._core(stmt, params).rowcount)

    def all(self, stmt: Prepared, params: Mapping[str, Any]) -> list[Row]:
        if self._raw is not None:
            return self._raw.execute(*stmt.sqlite_args(params)).fetchall()
        return list(self._core(stmt, params).all())

    def first(self, stmt: Prepared, params: Mapping[str, Any]) -> Row | None:
        if self._raw is not None:
            row: Row | None = self._raw.execute(*stmt.sqlite_args(params)).fetchone()
            return row
        return self._core(stmt, params).first()  # type: ignore[no-any-return]


_PENDING = TransferStatus.PENDING.value
_FAILED = TransferStatus.FAILED.value
_c = charges.c
_t = transfers.c
_e = events.c

# -- events ---------------------------------------------------------------------------------

PENDING_EVENTS = Prepared(
    select(
        _e.seq,
        _e.event_id,
        _e.type,
        _e.created,
        _e.livemode,
        _e.object_id,
        _e.raw,
        _e.received_at,
        _e.status,
        _e.attempts,
        _e.last_error,
    )
    .where(_e.status == EventStatus.PENDING.value, _e.next_attempt_at <= _b("now"))
    .order_by(_e.seq)
    .limit(_b("limit"))
)
MARK_EVENT = Prepared(
    update(events)
    .where(_e.event_id == _b("event_id"))
    .values(status=_b("new_status"), last_error=_b("error"), processed_at=_b("now"))
)
DEFER_EVENT = Prepared(
    update(events)
    .where(_e.event_id == _b("event_id"))
    .values(
        attempts=_e.attempts + 1,
        last_error=_b("error"),
        next_attempt_at=_b("next_attempt_at"),
    )
)

# -- charges --------------------------------------------------------------------------------

GET_CHARGE = Prepared(queries.view_select().where(_c.charge_id == _b("charge_id")))
SET_AWAITING_FEE = Prepared(
    update(charges)
    .where(_c.charge_id == _b("charge_id"))
    .values(
        fee_deadline=func.coalesce(_c.fee_deadline, _b("deadline")),
        next_check_at=func.coalesce(_c.next_check_at, 0.0),
        updated_at=_b("now"),
    )
)
FEE_DEADLINE = Prepared(select(_c.fee_deadline).where(_c.charge_id == _b("charge_id")))
DEFER_FEE_CHECK = Prepared(
    update(charges)
    .where(_c.charge_id == _b("charge_id"), _c.fee_deadline.is_not(None))
    .values(next_check_at=_b("next_check_at"))
)
CHARGES_AWAITING_FEE = Prepared(
    select(_c.charge_id)
    .where(
        _c.next_check_at <= _b("now"),
        _c.fee_deadline.is_not(None),
        ~exists().where(_t.charge_id == _c.charge_id),
    )
    .order_by(_c.next_check_at, _c.seq)
    .limit(_b("limit"))
)
CHARGE_FOR_TRANSFER = Prepared(
    select(_c.order_id, _c.transfer_group, _c.amount, _c.currency).where(
        _c.charge_id == _b("charge_id")
    )
)
STORE_SPLIT = Prepared(
    update(charges)
    .where(_c.charge_id == _b("charge_id"))
    .values(
        stripe_fee=_b("stripe_fee"),
        fee_source=_b("fee_source"),
        commission=_b("commission"),
        transfer_amount=_b("transfer_amount"),
        fee_deadline=None,
        next_check_at=None,
        updated_at=_b("now"),
    )
)

# -- transfers ------------------------------------------------------------------------------

DUE_TRANSFERS = Prepared(
    select(
        _t.charge_id,
        _t.amount,
        _t.currency,
        _t.destination,
        _t.transfer_group,
        _t.idempotency_key,
        _t.attempts,
        _t.metadata,
    )
    .where(_t.status == _PENDING, _t.next_attempt_at <= _b("now"))
    .order_by(_t.next_attempt_at, _t.seq)
    .limit(_b("limit"))
)
TRANSFER_CREATED = Prepared(
    update(transfers)
    # No IN (...): an expanding list would need compiling per call.
    .where(_t.charge_id == _b("charge_id"), or_(_t.status == _PENDING, _t.status == _FAILED))
    .values(
        status=TransferStatus.CREATED.value,
        transfer_id=_b("transfer_id"),
        error_code="",
        error_message="",
        updated_at=_b("now"),
    )
)
TRANSFER_DEFERRED = Prepared(
    update(transfers)
    .where(_t.charge_id == _b("charge_id"), _t.status == _PENDING)
    .values(
        attempts=_t.attempts + 1,
        error_message=_b("error"),
        next_attempt_at=_b("next_attempt_at"),
        updated_at=_b("now"),
    )
)
TRANSFER_FAILED = Prepared(
    update(transfers)
    .where(_t.charge_id == _b("charge_id"), _t.status == _PENDING)
    .values(
        status=_FAILED,
        attempts=_t.attempts + 1,
        error_code=_b("code"),
        error_message=_b("message"),
        updated_at=_b("now"),
    )
)

# -- timeline -------------------------------------------------------------------------------

ADD_TIMELINE = Prepared(
    timeline.insert().values(
        charge_id=_b("charge_id"),
        at=_b("at"),
        kind=_b("kind"),
        detail=_b("detail"),
    )
)
TIMELINE = Prepared(
    select(timeline.c.at, timeline.c.kind, timeline.c.detail)
    .where(timeline.c.charge_id == _b("charge_id"))
    .order_by(timeline.c.id)
)


# -- the two statements whose ON CONFLICT clause is the dialect's own ----------------------


class Upserts:
    """UPSERT_CHARGE and INSERT_TRANSFER built with one dialect's ``insert``."""

    def __init__(self, insert: Any) -> None:
        self.insert = insert  # for the rare statements built per call
        stmt = insert(charges).values(
            charge_id=_b("charge_id"),
            payment_intent_id=_b("payment_intent_id"),
            order_id=_b("order_id"),
            currency=_b("currency"),
            amount=_b("amount"),
            amount_refunded=_b("amount_refunded"),
            captured=_b("captured"),
            paid=_b("paid"),
            status=_b("status"),
            created=_b("created"),
            livemode=_b("livemode"),
            transfer_group=_b("transfer_group"),
            balance_transaction_id=_b("balance_transaction_id"),
            actual_fee=_b("actual_fee"),
            updated_at=_b("now"),
        )
        new = stmt.excluded
        self.UPSERT_CHARGE = Prepared(
            stmt.on_conflict_do_update(
                index_elements=["charge_id"],
                set_={
                    "payment_intent_id": new.payment_intent_id,
                    "order_id": new.order_id,
                    "currency": new.currency,
                    "amount": new.amount,
                    # Refunds only accumulate: a stale snapshot must not undo one.
                    "amount_refunded": case(
                        (new.amount_refunded > _c.amount_refunded, new.amount_refunded),
                        else_=_c.amount_refunded,
                    ),
                    "captured": new.captured,
                    "paid": new.paid,
                    "status": new.status,
                    "created": new.created,
                    "livemode": new.livemode,
                    "transfer_group": new.transfer_group,
                    # A known fee is never forgotten (null means "not known yet", not "0").
                    "balance_transaction_id": case(
                        (new.balance_transaction_id == "", _c.balance_transaction_id),
                        else_=new.balance_transaction_id,
                    ),
                    "actual_fee": func.coalesce(new.actual_fee, _c.actual_fee),
                    "updated_at": new.updated_at,
                },
            )
        )
        self.INSERT_TRANSFER = Prepared(
            insert(transfers)
            .values(
                charge_id=_b("charge_id"),
                amount=_b("amount"),
                currency=_b("currency"),
                destination=_b("destination"),
                transfer_group=_b("transfer_group"),
                idempotency_key=_b("idempotency_key"),
                metadata=_b("metadata"),
                status=_PENDING,
                attempts=0,
                next_attempt_at=0.0,
                created_at=_b("now"),
                updated_at=_b("now"),
            )
            .on_conflict_do_nothing(index_elements=["charge_id"])
        )


SQLITE_UPSERTS = Upserts(sqlite_dialect.insert)
POSTGRESQL_UPSERTS = Upserts(postgresql.insert)
