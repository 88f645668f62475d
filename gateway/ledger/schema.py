"""Ledger tables (SQLAlchemy Core) and the migrations that build them, in order."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
    text,
)

# SQLite only aliases the rowid for a column declared exactly "INTEGER PRIMARY KEY";
# BigInteger elsewhere keeps PostgreSQL from running out of ids.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

ID = 255  # Stripe ids are short; 255 leaves room


def _events(md: MetaData) -> Table:
    return Table(
        "events",
        md,
        Column("seq", SeqType, primary_key=True, autoincrement=True),
        Column("event_id", String(ID), nullable=False, unique=True),
        Column("type", String(100), nullable=False),
        Column("created", BigInteger, nullable=False),
        Column("livemode", Boolean, nullable=False),
        Column("object_id", String(ID), nullable=False, server_default=""),
        Column("raw", LargeBinary, nullable=False),
        Column("received_at", Float, nullable=False),
        Column("status", String(16), nullable=False, server_default="pending"),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("next_attempt_at", Float, nullable=False, server_default="0"),
        Column("last_error", Text, nullable=False, server_default=""),
        Column("processed_at", Float, nullable=True),
        # The processor's scan: pending rows in arrival order.
        Index("ix_events_status_seq", "status", "seq"),
        sqlite_autoincrement=True,
    )


def _charges_v1(md: MetaData) -> Table:
    return Table(
        "charges",
        md,
        # seq is the primary key, so "newest first" (seq DESC) is an index scan.
        Column("seq", SeqType, primary_key=True, autoincrement=True),
        Column("charge_id", String(ID), nullable=False, unique=True),
        Column("payment_intent_id", String(ID), nullable=False, server_default=""),
        Column("order_id", String(ID), nullable=False, server_default=""),
        Column("currency", String(3), nullable=False),
        Column("amount", BigInteger, nullable=False),
        Column("amount_refunded", BigInteger, nullable=False, server_default="0"),
        Column("captured", Boolean, nullable=False),
        Column("paid", Boolean, nullable=False),
        Column("status", String(32), nullable=False, server_default=""),
        Column("created", BigInteger, nullable=False),
        Column("livemode", Boolean, nullable=False),
        Column("transfer_group", String(ID), nullable=False, server_default=""),
        Column("balance_transaction_id", String(ID), nullable=False, server_default=""),
        Column("actual_fee", BigInteger, nullable=True),  # NULL: not known yet, never 0
        # The split, stored when the transfer row is created (NULL before).
        Column("stripe_fee", BigInteger, nullable=True),
        Column("fee_source", String(32), nullable=True),
        Column("commission", BigInteger, nullable=True),
        Column("transfer_amount", BigInteger, nullable=True),
        Column("updated_at", Float, nullable=False),
        Index("ix_charges_created", "created"),
        sqlite_autoincrement=True,
    )


def _transfers(md: MetaData) -> Table:
    return Table(
        "transfers",
        md,
        Column("seq", SeqType, primary_key=True, autoincrement=True),
        # UNIQUE: one transfer per charge, enforced by the schema (Stripe keeps
        # idempotency keys only 24 h).
        Column(
            "charge_id", String(ID), ForeignKey("charges.charge_id"), nullable=False, unique=True
        ),
        Column("transfer_id", String(ID), nullable=False, server_default=""),
        Column("amount", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        Column("destination", String(ID), nullable=False),
        Column("transfer_group", String(ID), nullable=False, server_default=""),
        Column("idempotency_key", String(ID), nullable=False),
        Column("metadata", Text, nullable=False, server_default="{}"),  # JSON object
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("next_attempt_at", Float, nullable=False, server_default="0"),
        Column("error_code", String(100), nullable=False, server_default=""),
        Column("error_message", Text, nullable=False, server_default=""),
        Column("retries", Integer, nullable=False, server_default="0"),  # manual retries
        Column("reversal_id", String(ID), nullable=False, server_default=""),
        Column("reversal_amount", BigInteger, nullable=False, server_default="0"),
        Column("created_at", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Index("ix_transfers_due", "status", "next_attempt_at"),
        sqlite_autoincrement=True,
    )


def _refunds(md: MetaData) -> Table:
    return Table(
        "refunds",
        md,
        Column("refund_id", String(ID), primary_key=True),
        Column("charge_id", String(ID), nullable=False),
        Column("amount", BigInteger, nullable=False),
        Column("created", BigInteger, nullable=False),
        Index("ix_refunds_charge", "charge_id"),
    )


def _timeline(md: MetaData) -> Table:
    return Table(
        "timeline",
        md,
        Column("id", SeqType, primary_key=True, autoincrement=True),
        # No foreign key: an event about a charge may arrive before the charge row.
        Column("charge_id", String(ID), nullable=False),
        Column("at", Float, nullable=False),
        Column("kind", String(32), nullable=False),
        Column("detail", Text, nullable=False, server_default=""),
        Index("ix_timeline_charge", "charge_id", "id"),
        sqlite_autoincrement=True,
    )


def _schema_version(md: MetaData) -> Table:
    return Table(
        "schema_version",
        md,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", Float, nullable=False),
    )


# --- The current schema, used by the queries. -------------------------------------------

metadata = MetaData()
events = _events(metadata)
charges = _charges_v1(metadata)
# Migration 2: waiting for the actual fee (balance transaction) with a deadline and backoff.
charges.append_column(Column("fee_deadline", Float, nullable=True))
charges.append_column(Column("next_check_at", Float, nullable=True))
Index("ix_charges_fee_check", charges.c.next_check_at)
transfers = _transfers(metadata)
refunds = _refunds(metadata)
timeline = _timeline(metadata)
schema_version = _schema_version(metadata)


# --- Migrations: frozen history, applied in order, one transaction each. -----------------


def _migration_1(conn: Connection) -> None:
    """The initial schema, exactly as version 1 shipped it."""
    md = MetaData()
    for build in (_events, _charges_v1, _transfers, _refunds, _timeline, _schema_version):
        build(md)
    md.create_all(conn)


def _migration_2(conn: Connection) -> None:
    """Awaiting-fee columns on charges and the index the fee re-check scans."""
    for name in ("fee_deadline", "next_check_at"):
        type_sql = Float().compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE charges ADD COLUMN {name} {type_sql}"))
    conn.execute(text("CREATE INDEX ix_charges_fee_check ON charges (next_check_at)"))


Migration = Callable[[Connection], None]
MIGRATIONS: tuple[Migration, ...] = (_migration_1, _migration_2)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    """The applied schema version; 0 for an empty database."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(select(func.max(schema_version.c.version))).scalar() or 0)


def apply_migration(conn: Connection, version: int) -> None:
    """Run migration ``version`` (1-based) and record it, inside the caller's transaction."""
    MIGRATIONS[version - 1](conn)
    conn.execute(schema_version.insert().values(version=version, applied_at=time.time()))
