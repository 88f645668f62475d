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
    bindparam,
    case,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from gateway.errors import StorageError
from gateway.fees import FeeSplit
from gateway.ledger import queries
from gateway.ledger import statements as st
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
    transfers,
)
from gateway.ledger.unit import Unit
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
CLOSE_WAIT = 10.0  # seconds close() waits for calls in progress on other threads

_PENDING = TransferStatus.PENDING.value

# Ids of the ledgers with a unit open on this thread: a Ledger write inside a unit would
# need a second transaction on the same connection (a programming error).
_units_open = threading.local()


def _guard(
    what: str,
) -> Callable[[Callable[Concatenate[Ledger, P], R]], Callable[Concatenate[Ledger, P], R]]:
    """Turn any database/OS failure of a Ledger method into a StorageError with a safe text."""

    def deco(fn: Callable[Concatenate[Ledger, P], R]) -> Callable[Concatenate[Ledger, P], R]:
        @functools.wraps(fn)
        def wrapper(self: Ledger, *args: P.args, **kwargs: P.kwargs) -> R:
            self._call_begins()
            try:
                return fn(self, *args, **kwargs)
            except DB_ERRORS as exc:
                self._after_error()
                raise StorageError(safe_message(what, exc)) from exc
            finally:
                self._call_ends()

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
        # Calls in progress: close() waits for them, because closing a SQLite connection
        # while another thread runs a statement on it can crash the process.
        self._calls = 0
        self._calls_done = threading.Condition()

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

    def _call_begins(self) -> None:
        """Every guarded method and unit starts here: the one check for a closed ledger."""
        with self._calls_done:
            if self._closed:
                raise StorageError("the ledger is closed")
            self._calls += 1

    def _call_ends(self) -> None:
        with self._calls_done:
            self._calls -= 1
            if not self._calls:
                self._calls_done.notify_all()

    def close(self) -> None:
        """Wait for calls in progress (bounded), close every connection. Idempotent.

        Later calls raise StorageError.
        """
        with self._calls_done:
            if self._closed:
                return
            self._closed = True
            if not self._calls_done.wait_for(lambda: self._calls == 0, CLOSE_WAIT):
                log.warning("ledger: closing with %d calls still in progress", self._calls)
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

    # --- units -----------------------------------------------------------------------------

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """Several writes in one transaction (one commit, one fsync): all of them or none.

        ``with ledger.unit() as u: u.upsert_charge(...); u.mark_event(...)``. The unit has
        the Ledger's write methods (and ``get_charge``); they see each other's changes.
        Listeners run once, after the commit, if something changed. The write lock is
        held until the block ends: no Stripe calls (or other waits) inside. An exception
        rolls everything back; a database failure is a StorageError, and a failed write
        dooms the unit even if the block catches the error. Nesting raises RuntimeError.
        """
        open_ids: set[int] | None = getattr(_units_open, "ids", None)
        if open_ids is None:
            open_ids = _units_open.ids = set()
        if id(self) in open_ids:
            raise RuntimeError("a ledger write inside ledger.unit(): call the unit's method")
        self._call_begins()  # the unit's whole block is one call: close() waits for it
        open_ids.add(id(self))
        u: Unit | None = None
        try:
            with self._write() as conn:
                raw = conn.connection.dbapi_connection if self._sqlite else None
                upserts = st.SQLITE_UPSERTS if self._sqlite else st.POSTGRESQL_UPSERTS
                u = Unit(conn, raw, upserts)  # type: ignore[arg-type]
                yield u
                u._check_before_commit()
        except Exception as exc:
            self._after_error()
            if isinstance(exc, DB_ERRORS):  # BEGIN or COMMIT: the unit's writes guard theirs
                what = u.what if u is not None else "start a write"
                raise StorageError(safe_message(what, exc)) from exc
            raise
        finally:
            if u is not None:
                u._finish()  # its connection is not in its transaction any more
            open_ids.discard(id(self))
            self._call_ends()
        if u.changed:
            self._notify()

    @_guard("read the data version")
    def data_version(self) -> int:
        """A number that changes whenever any connection or process committed."""
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
        rows = self._query(st.PENDING_EVENTS, {"now": now, "limit": limit})
        return [
            InboxEvent(
                seq=r[0],
                event_id=r[1],
                type=r[2],
                created=r[3],
                livemode=bool(r[4]),
                object_id=r[5],
                raw=bytes(r[6]),
                received_at=r[7],
                status=EventStatus(r[8]),
                attempts=r[9],
                last_error=r[10],
            )
            for r in rows
        ]

    def mark_event(self, event_id: str, status: EventStatus, error: str = "") -> None:
        with self.unit() as u:
            u.mark_event(event_id, status, error)

    def defer_event(self, event_id: str, error: str, next_attempt_at: float) -> None:
        with self.unit() as u:
            u.defer_event(event_id, error, next_attempt_at)

    @_guard("count events")
    def event_counts(self) -> dict[EventStatus, int]:
        stmt = select(events.c.status, func.count()).group_by(events.c.status)
        with self._read() as conn:
            found = {status: n for status, n in conn.execute(stmt)}
        return {s: int(found.get(s.value, 0)) for s in EventStatus}

    # --- charges --------------------------------------------------------------------------

    def upsert_charge(self, snapshot: ChargeSnapshot) -> None:
        """Insert or update a charge's Stripe fields, keeping its seq and its split."""
        with self.unit() as u:
            u.upsert_charge(snapshot)

    @_guard("read a charge")
    def get_charge(self, charge_id: str) -> ChargeView | None:
        rows = self._query(st.GET_CHARGE, {"charge_id": charge_id})
        return queries.to_view(rows[0]) if rows else None

    def set_awaiting_fee(self, charge_id: str, deadline: float) -> float | None:
        """Wait for the actual fee until ``deadline`` (an earlier deadline is kept).

        Returns the deadline in force, None if the charge is unknown. The first check
        is due at once; ``defer_fee_check`` sets the backoff.
        """
        with self.unit() as u:
            return u.set_awaiting_fee(charge_id, deadline)

    def defer_fee_check(self, charge_id: str, next_check_at: float) -> None:
        with self.unit() as u:
            u.defer_fee_check(charge_id, next_check_at)  # invisible in the window

    @_guard("read charges awaiting their fee")
    def charges_awaiting_fee(self, now: float, limit: int) -> list[str]:
        """Charges without a transfer whose actual-fee check is due, soonest first."""
        return [r[0] for r in self._query(st.CHARGES_AWAITING_FEE, {"now": now, "limit": limit})]

    # --- transfers ------------------------------------------------------------------------

    def create_transfer(
        self, charge_id: str, split: FeeSplit, destination: str, idempotency_key: str
    ) -> bool:
        """Store the split and a PENDING transfer atomically; False if one already exists."""
        with self.unit() as u:
            return u.create_transfer(charge_id, split, destination, idempotency_key)

    @_guard("read due transfers")
    def due_transfers(self, now: float, limit: int) -> list[DueTransfer]:
        rows = self._query(st.DUE_TRANSFERS, {"now": now, "limit": limit})
        return [
            DueTransfer(
                charge_id=r[0],
                amount=r[1],
                currency=r[2],
                destination=r[3],
                transfer_group=r[4],
                idempotency_key=r[5],
                attempts=r[6],
                metadata={str(k): str(v) for k, v in json.loads(r[7]).items()},
            )
            for r in rows
        ]

    def transfer_created(self, charge_id: str, transfer_id: str) -> None:
        with self.unit() as u:
            u.transfer_created(charge_id, transfer_id)

    def transfer_deferred(self, charge_id: str, error: str, next_attempt_at: float) -> None:
        with self.unit() as u:
            u.transfer_deferred(charge_id, error, next_attempt_at)

    def transfer_failed(self, charge_id: str, code: str, message: str) -> None:
        with self.unit() as u:
            u.transfer_failed(charge_id, code, message)

    def retry_transfer(self, charge_id: str) -> bool:
        """A FAILED transfer back to PENDING under a new idempotency key; False if not failed."""
        with self.unit() as u:
            return u.retry_transfer(charge_id)

    def record_refund(self, charge_id: str, refund_id: str, amount: int, created: int) -> bool:
        """Store a refund once (True if new) and raise the charge's amount_refunded to match."""
        with self.unit() as u:
            return u.record_refund(charge_id, refund_id, amount, created)

    def transfer_reversed(self, charge_id: str, reversal_id: str, amount: int) -> None:
        """Add a reversal once per id; the status is REVERSED when all of it came back."""
        with self.unit() as u:
            u.transfer_reversed(charge_id, reversal_id, amount)

    # --- timeline -------------------------------------------------------------------------

    def add_timeline(
        self, charge_id: str, kind: TimelineKind, detail: str, at: float | None = None
    ) -> None:
        with self.unit() as u:
            u.add_timeline(charge_id, kind, detail, at)

    @_guard("read a timeline")
    def timeline(self, charge_id: str) -> list[TimelineEntry]:
        return [
            TimelineEntry(charge_id, r[0], TimelineKind(r[1]), r[2])
            for r in self._query(st.TIMELINE, {"charge_id": charge_id})
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

    def _query(self, stmt: st.Prepared, params: dict[str, Any]) -> list[st.Row]:
        """A prepared read outside any unit: SQLite's raw connection, else a short read."""
        if self._conns is not None:
            return st.Executor(None, self._conns.dbapi()).all(stmt, params)
        with self._read() as conn:
            return st.Executor(conn, None).all(stmt, params)
