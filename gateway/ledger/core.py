"""Ledger: the single source of truth, SQLAlchemy Core over SQLite (default) or PostgreSQL."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    create_engine,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from gateway.errors import StorageError
from gateway.fees import FeeSplit
from gateway.ledger import queries
from gateway.ledger.connections import (
    DB_ERRORS,
    ThreadConnections,
    close_quietly,
    install_sqlite_pragmas,
    safe_message,
)
from gateway.ledger.inbox_writer import InboxWriter
from gateway.ledger.schema import (
    SCHEMA_VERSION,
    apply_migration,
    charges,
    current_version,
    events,
    refunds,
    timeline,
    transfers,
)
from gateway.models import (
    ChargeFilter,
    ChargeSnapshot,
    ChargeView,
    Counts,
    DueTransfer,
    EventStatus,
    InboxEvent,
    TimelineEntry,
    TimelineKind,
    Totals,
    TransferStatus,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

ChargeRow = tuple[Any, ...]  # a raw row of queries.VIEW_COLUMNS
Fetch = Callable[[int], list[ChargeRow]]  # rows after a seq

DEFAULT_BUSY_TIMEOUT_MS = 10_000

_PENDING = TransferStatus.PENDING.value


def _guard(
    what: str,
) -> Callable[[Callable[Concatenate[Ledger, P], R]], Callable[Concatenate[Ledger, P], R]]:
    """Turn any database/OS failure of a Ledger method into a StorageError with a safe text."""

    def deco(fn: Callable[Concatenate[Ledger, P], R]) -> Callable[Concatenate[Ledger, P], R]:
        @functools.wraps(fn)
        def wrapper(self: Ledger, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(self, *args, **kwargs)
            except DB_ERRORS as exc:
                self._after_error()
                raise StorageError(safe_message(what, exc)) from exc

        return wrapper

    return deco


class Ledger:
    """Events inbox, charges, transfers, refunds and timeline; see docs/ARCHITECTURE.md."""

    def __init__(self, engine: Engine, *, is_sqlite: bool) -> None:
        self._engine = engine
        self._sqlite = is_sqlite
        self._insert = sqlite_dialect.insert if is_sqlite else postgresql.insert
        self._conns = ThreadConnections(engine) if is_sqlite else None
        # SQLite: every webhook insert goes through one connection, committed in groups.
        self._inbox = InboxWriter(engine.raw_connection) if is_sqlite else None
        self._listeners: tuple[Callable[[], None], ...] = ()
        self._listeners_lock = threading.Lock()
        self._dv_lock = threading.Lock()
        self._dv_conn: Any = None  # SQLite: a connection that never writes, for data_version
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Ledger:
        """Open (creating parent directories) and migrate the database at ``url``."""
        sa_url = make_url(url)
        backend = sa_url.get_backend_name()
        if backend == "sqlite":
            database = sa_url.database or ""
            if database in ("", ":memory:") or sa_url.query.get("mode") == "memory":
                raise ValueError("the ledger needs a SQLite file, not an in-memory database")
            if sa_url.query.get("uri") != "true":
                try:
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StorageError(safe_message("create the data directory", exc)) from exc
            engine = create_engine(
                sa_url,
                # Connections live per thread (ThreadConnections); no pooling behind them.
                poolclass=NullPool,
                connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
                hide_parameters=True,
            )
            install_sqlite_pragmas(engine, busy_timeout_ms)
        elif backend == "postgresql":
            engine = create_engine(sa_url, pool_pre_ping=True, hide_parameters=True)
        else:
            raise ValueError(f"unsupported ledger database: {backend}")
        ledger = cls(engine, is_sqlite=backend == "sqlite")
        try:
            ledger._setup()
        except BaseException:
            ledger.close()
            raise
        return ledger

    @_guard("open the database")
    def _setup(self) -> None:
        if self._sqlite:
            assert self._conns is not None
            conn = self._conns.get()
            with conn.begin():  # no BEGIN is emitted: PRAGMAs run in autocommit
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                if str(mode).lower() != "wal":
                    mode = conn.exec_driver_sql("PRAGMA journal_mode = WAL").scalar()
            if str(mode).lower() != "wal":
                log.warning("ledger: SQLite refused WAL mode (%s)", mode)
        with self._read() as conn:
            version = current_version(conn)
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the ledger database has schema version {version}, newer than this "
                f"URSUS understands ({SCHEMA_VERSION}): upgrade URSUS"
            )
        while version < SCHEMA_VERSION:
            with self._write() as conn:
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = current_version(conn)
                if version < SCHEMA_VERSION:
                    apply_migration(conn, version + 1)
                    log.info("ledger: migrated to schema version %d", version + 1)
                    version += 1
        if self._sqlite:
            self._dv_conn = self._engine.raw_connection()

    def close(self) -> None:
        """Close every connection; later calls raise StorageError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._inbox is not None:
            self._inbox.close()
        if self._conns is not None:
            self._conns.close()
        with self._dv_lock:
            if self._dv_conn is not None:
                close_quietly(self._dv_conn)
                self._dv_conn = None
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions ---------------------------------------------------------------------

    @contextmanager
    def _read(self, snapshot: bool = False) -> Iterator[Connection]:
        """A connection for reads; ``snapshot``: several SELECTs see one state."""
        if self._closed:
            raise StorageError("the ledger is closed")
        if self._conns is None:
            with self._engine.connect() as conn:
                yield conn
            return
        conn = self._conns.get()
        with conn.begin():
            if snapshot:
                conn.exec_driver_sql("BEGIN")
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction, committed on exit (listeners are the caller's job)."""
        if self._closed:
            raise StorageError("the ledger is closed")
        if self._conns is None:
            with self._engine.begin() as conn:
                yield conn
            return
        conn = self._conns.get()
        with conn.begin():
            # IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so a
            # read-then-write can neither interleave with another writer nor fail late
            # with SQLITE_BUSY on the lock upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    def _after_error(self) -> None:
        """Leave the thread's connection idle (or drop it) so the next call starts clean."""
        if self._conns is None:
            return
        try:
            conn = self._conns.get()
            if conn.in_transaction():
                conn.rollback()
            raw = self._conns.dbapi()
            if raw.in_transaction:
                raw.rollback()
        except (StorageError, *DB_ERRORS):
            self._conns.discard_current()

    # --- listeners ----------------------------------------------------------------------

    def add_listener(self, cb: Callable[[], None]) -> None:
        """Call ``cb()`` (no payload) after every committed change, on the writing thread."""
        with self._listeners_lock:
            self._listeners = (*self._listeners, cb)

    def remove_listener(self, cb: Callable[[], None]) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
            if cb in listeners:
                listeners.remove(cb)
            self._listeners = tuple(listeners)

    def _notify(self) -> None:
        for cb in self._listeners:
            try:
                cb()
            except Exception:
                log.exception("ledger listener %r failed", cb)

    @_guard("read the data version")
    def data_version(self) -> int:
        """A number that changes whenever any connection or process committed."""
        if self._closed:
            raise StorageError("the ledger is closed")
        if self._sqlite:
            # PRAGMA data_version changes when *another* connection committed; this
            # connection never writes, so it sees every commit, ours included.
            with self._dv_lock:
                if self._dv_conn is None:
                    raise StorageError("the ledger is closed")
                cur = self._dv_conn.cursor()
                try:
                    cur.execute("PRAGMA data_version")
                    return int(cur.fetchone()[0])
                finally:
                    cur.close()
        # PostgreSQL: the snapshot (xmin:xmax:in-progress xids) changes when any write
        # transaction starts or ends; hashed to an int. Coarse (cluster-wide), never stale.
        with self._read() as conn:
            snap = str(conn.exec_driver_sql("SELECT txid_current_snapshot()::text").scalar())
        return int.from_bytes(hashlib.blake2b(snap.encode(), digest_size=7).digest(), "big")

    # --- inbox ----------------------------------------------------------------------------

    @_guard("record the event")
    def record_event(
        self,
        event_id: str,
        type: str,
        created: int,
        livemode: bool,
        object_id: str,
        raw: bytes,
    ) -> bool:
        """Store a verified webhook event, committed before returning; False if a duplicate."""
        if self._closed:
            raise StorageError("the ledger is closed")
        now = time.time()
        if self._inbox is not None:
            # Committed (with whatever other threads queued meanwhile) before it returns.
            row = (event_id, type, created, 1 if livemode else 0, object_id, raw, now)
            inserted = self._inbox.insert(row)
        else:
            stmt = (
                self._insert(events)
                .values(
                    event_id=event_id,
                    type=type,
                    created=created,
                    livemode=livemode,
                    object_id=object_id,
                    raw=raw,
                    received_at=now,
                    status=EventStatus.PENDING.value,
                    attempts=0,
                    next_attempt_at=0.0,
                    last_error="",
                )
                .on_conflict_do_nothing(index_elements=["event_id"])
            )
            with self._write() as conn:
                inserted = conn.execute(stmt).rowcount == 1
        if inserted:
            self._notify()
        return inserted

    @_guard("read pending events")
    def pending_events(self, limit: int, now: float) -> list[InboxEvent]:
        """Pending events due at ``now``, in arrival order."""
        stmt = (
            select(
                events.c.seq,
                events.c.event_id,
                events.c.type,
                events.c.created,
                events.c.livemode,
                events.c.object_id,
                events.c.raw,
                events.c.received_at,
                events.c.status,
                events.c.attempts,
                events.c.last_error,
            )
            .where(events.c.status == EventStatus.PENDING.value, events.c.next_attempt_at <= now)
            .order_by(events.c.seq)
            .limit(limit)
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [
            InboxEvent(
                seq=r.seq,
                event_id=r.event_id,
                type=r.type,
                created=r.created,
                livemode=bool(r.livemode),
                object_id=r.object_id,
                raw=bytes(r.raw),
                received_at=r.received_at,
                status=EventStatus(r.status),
                attempts=r.attempts,
                last_error=r.last_error,
            )
            for r in rows
        ]

    @_guard("update an event")
    def mark_event(self, event_id: str, status: EventStatus, error: str = "") -> None:
        stmt = (
            update(events)
            .where(events.c.event_id == event_id)
            .values(status=EventStatus(status).value, last_error=error, processed_at=time.time())
        )
        self._write_notify(stmt)

    @_guard("defer an event")
    def defer_event(self, event_id: str, error: str, next_attempt_at: float) -> None:
        stmt = (
            update(events)
            .where(events.c.event_id == event_id)
            .values(
                attempts=events.c.attempts + 1,
                last_error=error,
                next_attempt_at=next_attempt_at,
            )
        )
        self._write_notify(stmt)

    @_guard("count events")
    def event_counts(self) -> dict[EventStatus, int]:
        stmt = select(events.c.status, func.count()).group_by(events.c.status)
        with self._read() as conn:
            found = {status: n for status, n in conn.execute(stmt)}
        return {s: int(found.get(s.value, 0)) for s in EventStatus}

    # --- charges --------------------------------------------------------------------------

    @_guard("store a charge")
    def upsert_charge(self, snapshot: ChargeSnapshot) -> None:
        """Insert or update a charge's Stripe fields, keeping its seq and its split."""
        s = snapshot
        stmt = self._insert(charges).values(
            charge_id=s.charge_id,
            payment_intent_id=s.payment_intent_id,
            order_id=s.order_id,
            currency=s.currency.lower(),
            amount=s.amount,
            amount_refunded=s.amount_refunded,
            captured=s.captured,
            paid=s.paid,
            status=s.status,
            created=s.created,
            livemode=s.livemode,
            transfer_group=s.transfer_group,
            balance_transaction_id=s.balance_transaction_id,
            actual_fee=s.actual_fee,
            updated_at=time.time(),
        )
        new = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["charge_id"],
            set_={
                "payment_intent_id": new.payment_intent_id,
                "order_id": new.order_id,
                "currency": new.currency,
                "amount": new.amount,
                # Refunds only accumulate: a stale snapshot must not undo one.
                "amount_refunded": case(
                    (new.amount_refunded > charges.c.amount_refunded, new.amount_refunded),
                    else_=charges.c.amount_refunded,
                ),
                "captured": new.captured,
                "paid": new.paid,
                "status": new.status,
                "created": new.created,
                "livemode": new.livemode,
                "transfer_group": new.transfer_group,
                # A known fee is never forgotten (null means "not known yet", not "0").
                "balance_transaction_id": case(
                    (new.balance_transaction_id == "", charges.c.balance_transaction_id),
                    else_=new.balance_transaction_id,
                ),
                "actual_fee": func.coalesce(new.actual_fee, charges.c.actual_fee),
                "updated_at": new.updated_at,
            },
        )
        self._write_notify(stmt)

    @_guard("read a charge")
    def get_charge(self, charge_id: str) -> ChargeView | None:
        stmt = queries.view_select().where(charges.c.charge_id == charge_id)
        with self._read() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else queries.to_view(row)

    @_guard("mark a charge as awaiting its fee")
    def set_awaiting_fee(self, charge_id: str, deadline: float) -> float | None:
        """Wait for the actual fee until ``deadline`` (an earlier deadline is kept).

        Returns the deadline in force, None if the charge is unknown. The first check
        is due at once; ``defer_fee_check`` sets the backoff.
        """
        where = charges.c.charge_id == charge_id
        with self._write() as conn:
            result = conn.execute(
                update(charges)
                .where(where)
                .values(
                    fee_deadline=func.coalesce(charges.c.fee_deadline, deadline),
                    next_check_at=func.coalesce(charges.c.next_check_at, 0.0),
                    updated_at=time.time(),
                )
            )
            found = conn.execute(select(charges.c.fee_deadline).where(where)).scalar()
        if result.rowcount:
            self._notify()
        return None if found is None else float(found)

    @_guard("defer a fee check")
    def defer_fee_check(self, charge_id: str, next_check_at: float) -> None:
        stmt = (
            update(charges)
            .where(charges.c.charge_id == charge_id, charges.c.fee_deadline.is_not(None))
            .values(next_check_at=next_check_at)
        )
        self._write_notify(stmt, notify=False)  # invisible in the window

    @_guard("read charges awaiting their fee")
    def charges_awaiting_fee(self, now: float, limit: int) -> list[str]:
        """Charges without a transfer whose actual-fee check is due, soonest first."""
        has_transfer = exists().where(transfers.c.charge_id == charges.c.charge_id)
        stmt = (
            select(charges.c.charge_id)
            .where(
                charges.c.next_check_at <= now,
                charges.c.fee_deadline.is_not(None),
                ~has_transfer,
            )
            .order_by(charges.c.next_check_at, charges.c.seq)
            .limit(limit)
        )
        with self._read() as conn:
            return list(conn.execute(stmt).scalars())

    # --- transfers ------------------------------------------------------------------------

    @_guard("create a transfer")
    def create_transfer(
        self, charge_id: str, split: FeeSplit, destination: str, idempotency_key: str
    ) -> bool:
        """Store the split and a PENDING transfer atomically; False if one already exists."""
        now = time.time()
        with self._write() as conn:
            charge = conn.execute(
                select(
                    charges.c.order_id,
                    charges.c.transfer_group,
                    charges.c.amount,
                    charges.c.currency,
                ).where(charges.c.charge_id == charge_id)
            ).first()
            if charge is None:
                raise ValueError(f"no charge {charge_id} in the ledger")
            if split.gross != charge.amount or split.currency.lower() != charge.currency:
                raise ValueError(f"the split does not match charge {charge_id}")
            metadata = {
                "charge_id": charge_id,
                "order_id": charge.order_id,
                "gross": str(split.gross),
                "stripe_fee": str(split.stripe_fee),
                "fee_source": str(split.fee_source),
                "commission": str(split.commission),
            }
            inserted = conn.execute(
                self._insert(transfers)
                .values(
                    charge_id=charge_id,
                    amount=split.transfer,
                    currency=split.currency.lower(),
                    destination=destination,
                    transfer_group=charge.transfer_group,
                    idempotency_key=idempotency_key,
                    # Frozen here: a retry under the same key must send identical params.
                    metadata=json.dumps(metadata, sort_keys=True),
                    status=_PENDING,
                    attempts=0,
                    next_attempt_at=0.0,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["charge_id"])
            ).rowcount
            if inserted != 1:
                return False
            conn.execute(
                update(charges)
                .where(charges.c.charge_id == charge_id)
                .values(
                    stripe_fee=split.stripe_fee,
                    fee_source=str(split.fee_source),
                    commission=split.commission,
                    transfer_amount=split.transfer,
                    fee_deadline=None,
                    next_check_at=None,
                    updated_at=now,
                )
            )
        self._notify()
        return True

    @_guard("read due transfers")
    def due_transfers(self, now: float, limit: int) -> list[DueTransfer]:
        t = transfers.c
        stmt = (
            select(
                t.charge_id,
                t.amount,
                t.currency,
                t.destination,
                t.transfer_group,
                t.idempotency_key,
                t.attempts,
                t.metadata,
            )
            .where(t.status == _PENDING, t.next_attempt_at <= now)
            .order_by(t.next_attempt_at, t.seq)
            .limit(limit)
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
        return [
            DueTransfer(
                charge_id=r.charge_id,
                amount=r.amount,
                currency=r.currency,
                destination=r.destination,
                transfer_group=r.transfer_group,
                idempotency_key=r.idempotency_key,
                attempts=r.attempts,
                metadata={str(k): str(v) for k, v in json.loads(r.metadata).items()},
            )
            for r in rows
        ]

    @_guard("mark a transfer created")
    def transfer_created(self, charge_id: str, transfer_id: str) -> None:
        stmt = (
            update(transfers)
            .where(
                transfers.c.charge_id == charge_id,
                transfers.c.status.in_([_PENDING, TransferStatus.FAILED.value]),
            )
            .values(
                status=TransferStatus.CREATED.value,
                transfer_id=transfer_id,
                error_code="",
                error_message="",
                updated_at=time.time(),
            )
        )
        self._write_notify(stmt)

    @_guard("defer a transfer")
    def transfer_deferred(self, charge_id: str, error: str, next_attempt_at: float) -> None:
        stmt = (
            update(transfers)
            .where(transfers.c.charge_id == charge_id, transfers.c.status == _PENDING)
            .values(
                attempts=transfers.c.attempts + 1,
                error_message=error,
                next_attempt_at=next_attempt_at,
                updated_at=time.time(),
            )
        )
        self._write_notify(stmt)

    @_guard("mark a transfer failed")
    def transfer_failed(self, charge_id: str, code: str, message: str) -> None:
        stmt = (
            update(transfers)
            .where(transfers.c.charge_id == charge_id, transfers.c.status == _PENDING)
            .values(
                status=TransferStatus.FAILED.value,
                attempts=transfers.c.attempts + 1,
                error_code=code,
                error_message=message,
                updated_at=time.time(),
            )
        )
        self._write_notify(stmt)

    @_guard("retry a transfer")
    def retry_transfer(self, charge_id: str) -> bool:
        """A FAILED transfer back to PENDING under a new idempotency key; False if not failed."""
        where = and_(
            transfers.c.charge_id == charge_id,
            transfers.c.status == TransferStatus.FAILED.value,
        )
        with self._write() as conn:
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
            self._notify()
        return bool(changed)

    @_guard("record a refund")
    def record_refund(self, charge_id: str, refund_id: str, amount: int, created: int) -> bool:
        """Store a refund once (True if new) and raise the charge's amount_refunded to match."""
        with self._write() as conn:
            inserted = conn.execute(
                self._insert(refunds)
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
        self._notify()
        return True

    @_guard("record a reversal")
    def transfer_reversed(self, charge_id: str, reversal_id: str, amount: int) -> None:
        """Add a reversal once per id; the status is REVERSED when all of it came back."""
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
        self._write_notify(stmt)

    # --- timeline -------------------------------------------------------------------------

    @_guard("add a timeline entry")
    def add_timeline(
        self, charge_id: str, kind: TimelineKind, detail: str, at: float | None = None
    ) -> None:
        stmt = timeline.insert().values(
            charge_id=charge_id,
            at=time.time() if at is None else at,
            kind=TimelineKind(kind).value,
            detail=detail,
        )
        self._write_notify(stmt)

    @_guard("read a timeline")
    def timeline(self, charge_id: str) -> list[TimelineEntry]:
        stmt = (
            select(timeline.c.at, timeline.c.kind, timeline.c.detail)
            .where(timeline.c.charge_id == charge_id)
            .order_by(timeline.c.id)
        )
        with self._read() as conn:
            return [
                TimelineEntry(charge_id, r.at, TimelineKind(r.kind), r.detail)
                for r in conn.execute(stmt)
            ]

    # --- queries --------------------------------------------------------------------------

    def _conditions(self, f: ChargeFilter) -> Any:
        return queries.conditions(f, case_insensitive_like=self._sqlite)

    @_guard("count charges")
    def count_charges(self, filter: ChargeFilter) -> int:
        stmt = queries.count_select(filter, case_insensitive_like=self._sqlite)
        with self._read() as conn:
            return int(conn.execute(stmt).scalar() or 0)

    @_guard("read charges")
    def charges_page(self, filter: ChargeFilter, offset: int, limit: int) -> list[ChargeView]:
        """Newest first (seq descending)."""
        # Skip `offset` rows on seq alone (the transfer join only when the filter needs
        # it), then join just the page: a deep page of a million rows stays cheap.
        source = queries.CHARGES_WITH_TRANSFER if queries.needs_transfer_join(filter) else charges
        page = (
            select(charges.c.seq)
            .select_from(source)
            .where(self._conditions(filter))
            .order_by(charges.c.seq.desc())
            .offset(max(offset, 0))
            .limit(max(limit, 0))
        )
        stmt = (
            queries.view_select()
            .where(charges.c.seq.in_(page.scalar_subquery()))
            .order_by(charges.c.seq.desc())
        )
        with self._read() as conn:
            return [queries.to_view(r) for r in conn.execute(stmt)]

    def iter_charges(self, filter: ChargeFilter, batch: int = 1000) -> Iterator[ChargeView]:
        """Oldest first, ``batch`` rows per query (keyset on seq): constant memory."""
        return map(queries.to_view, self.iter_charge_rows(filter, batch))

    def iter_charge_rows(self, filter: ChargeFilter, batch: int = 1000) -> Iterator[ChargeRow]:
        """As iter_charges, as raw tuples in ChargeView field order (bulk readers: export).

        Raw values: ``captured``/``livemode`` as stored (0/1 on SQLite), ``fee_source``
        and the transfer ``status`` as strings, None where there is no split / transfer.
        """
        batch = max(batch, 1)
        stmt = (
            queries.view_select()
            .where(self._conditions(filter), charges.c.seq > bindparam("after_seq", 0))
            .order_by(charges.c.seq)
            .limit(batch)
        )
        fetch = self._batch_fetcher(stmt)
        last = 0
        while True:
            rows = self._fetch_batch(fetch, last)
            yield from rows
            if len(rows) < batch:
                return
            last = rows[-1][0]

    def _batch_fetcher(self, stmt: Any) -> Fetch:
        if self._conns is None:

            def fetch_core(after_seq: int) -> list[ChargeRow]:
                with self._read() as conn:
                    return [tuple(r) for r in conn.execute(stmt, {"after_seq": after_seq})]

            return fetch_core
        # SQLite: compiled once, run on the thread's raw connection. SQLAlchemy's row
        # machinery would double the cost of a million-row export.
        compiled = stmt.compile(
            dialect=self._engine.dialect,
            compile_kwargs={"render_postcompile": True},  # IN (...) as plain "?" params
        )
        sql = compiled.string
        params = compiled.construct_params()
        values = [params[name] for name in compiled.positiontup or []]
        slot = (compiled.positiontup or []).index("after_seq")
        conns = self._conns

        def fetch_raw(after_seq: int) -> list[ChargeRow]:
            values[slot] = after_seq
            return conns.dbapi().execute(sql, values).fetchall()

        return fetch_raw

    @_guard("read charges")
    def _fetch_batch(self, fetch: Fetch, after_seq: int) -> list[ChargeRow]:
        # Each batch is its own short read: no transaction is held while the caller
        # writes the rows out (a long read would stop WAL checkpoints).
        if self._closed:
            raise StorageError("the ledger is closed")
        return fetch(after_seq)

    @_guard("total charges")
    def totals(self, filter: ChargeFilter) -> list[Totals]:
        """Sums per currency over the filter, currencies in alphabetical order."""
        c = charges.c
        created = TransferStatus.CREATED.value
        stmt = (
            select(
                c.currency,
                func.count(),
                func.coalesce(func.sum(c.amount), 0),
                func.coalesce(func.sum(c.stripe_fee), 0),
                func.coalesce(func.sum(c.commission), 0),
                func.coalesce(
                    func.sum(case((transfers.c.status == created, transfers.c.amount), else_=0)),
                    0,
                ),
                func.coalesce(func.sum(c.amount_refunded), 0),
            )
            .select_from(queries.CHARGES_WITH_TRANSFER)
            .where(self._conditions(filter))
            .group_by(c.currency)
            .order_by(c.currency)
        )
        with self._read() as conn:
            return [Totals(r[0], *map(int, r[1:])) for r in conn.execute(stmt)]

    @_guard("count")
    def counts(self) -> Counts:
        t = transfers.c
        with self._read(snapshot=True) as conn:
            n_charges = conn.execute(select(func.count()).select_from(charges)).scalar()
            by_status: dict[str, int] = dict(
                conn.execute(
                    select(t.status, func.count())
                    .where(t.status.in_([_PENDING, TransferStatus.FAILED.value]))
                    .group_by(t.status)
                ).all()
            )
            n_events = conn.execute(
                select(func.count())
                .select_from(events)
                .where(events.c.status == EventStatus.PENDING.value)
            ).scalar()
        return Counts(
            charges=int(n_charges or 0),
            pending_transfers=int(by_status.get(_PENDING, 0)),
            failed_transfers=int(by_status.get(TransferStatus.FAILED.value, 0)),
            pending_events=int(n_events or 0),
        )

    # --- helpers --------------------------------------------------------------------------

    def _write_notify(self, stmt: Any, *, notify: bool = True) -> int:
        with self._write() as conn:
            changed = conn.execute(stmt).rowcount
        if changed and notify:
            self._notify()
        return int(changed)
