"""Generate a ledger with N charges fast (benchmarks, scale tests of the desktop).

    python bench/make_ledger.py --out PATH --rows 1000000

The schema comes from ``Ledger.open`` (so it is the real one, migrations included);
the rows go in through plain sqlite3 ``executemany`` in one transaction.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.fees import FeeSource
from gateway.ledger import Ledger
from gateway.models import TransferStatus

START = 1_735_689_600  # 2025-01-01T00:00:00Z
CURRENCIES = ("usd",) * 14 + ("eur",) * 4 + ("jpy", "kwd")
CHUNK = 20_000

_CHARGE_SQL = (
    "INSERT INTO charges (seq, charge_id, payment_intent_id, order_id, currency, amount,"
    " amount_refunded, captured, paid, status, created, livemode, transfer_group,"
    " balance_transaction_id, actual_fee, stripe_fee, fee_source, commission,"
    " transfer_amount, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_TRANSFER_SQL = (
    "INSERT INTO transfers (charge_id, transfer_id, amount, currency, destination,"
    " transfer_group, idempotency_key, metadata, status, attempts, next_attempt_at,"
    " error_code, error_message, retries, reversal_id, reversal_amount, created_at,"
    " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def _order_id(rng: random.Random, i: int) -> str:
    # A few awkward ids so exports exercise quoting and formula neutralising.
    if i % 997 == 0:
        return f'ord,"{i}"'
    if i % 1009 == 0:
        return f"=HYPERLINK({i})"
    return f"order-{i:08d}-{rng.getrandbits(20):05x}"


def _json_str(value: str) -> str:
    return json.dumps(value) if '"' in value or "\\" in value else f'"{value}"'


def _split(amount: int, currency: str, actual: int | None) -> tuple[int, int, int]:
    """fees.split() for the default schedule in integer maths (10x faster, same result)."""
    if actual is None:
        # round_half_up(amount * 2.9%) + fixed, capped at the gross (fees.estimate_stripe_fee)
        fixed = {"jpy": 0, "kwd": 300}.get(currency, 30)
        fee = min((amount * 29 + 500) // 1000 + fixed, amount)
    else:
        fee = min(max(actual, 0), amount)
    net = amount - fee
    commission = min((net + 50) // 100, net)  # round_half_up(net * 1%)
    return fee, commission, net - commission


def _rows(
    rows: int, seed: int
) -> Iterator[tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]:
    rng = random.Random(seed)
    rand = rng.random
    created = START
    now = time.time()
    statuses = (
        (TransferStatus.FAILED.value, "insufficient_funds", "Balance too low", ""),
        (TransferStatus.PENDING.value, "", "", ""),
        (TransferStatus.CREATED.value, "", "", "tr_"),
    )
    charges: list[tuple[object, ...]] = []
    transfers: list[tuple[object, ...]] = []
    for seq in range(1, rows + 1):
        created += 1 + int(rand() * 59)
        currency = CURRENCIES[int(rand() * len(CURRENCIES))]
        amount = 50 + int(rand() * 499_950)
        if currency == "kwd":
            amount -= amount % 10  # three-decimal: amounts end in 0
        ids = f"{seed:02d}{seq:010d}"
        charge_id = "ch_" + ids
        order_id = _order_id(rng, seq)
        refunded = amount if rand() < 0.01 else 0
        roll = rand()
        actual = (amount * 29 + 500) // 1000 + 30 if rand() < 0.7 else None
        if roll < 0.02:  # 2%: no transfer row yet (awaiting capture or the fee)
            split_cols: tuple[object, ...] = (None, None, None, None)
        else:
            fee, commission, transfer = _split(amount, currency, actual)
            source = FeeSource.ESTIMATE.value if actual is None else FeeSource.ACTUAL.value
            split_cols = (fee, source, commission, transfer)
            status, code, message, prefix = statuses[0 if roll < 0.03 else 1 if roll < 0.05 else 2]
            meta = (
                f'{{"charge_id": "{charge_id}", "commission": "{commission}", '
                f'"fee_source": "{source}", "gross": "{amount}", '
                f'"order_id": {_json_str(order_id)}, "stripe_fee": "{fee}"}}'
            )
            transfers.append(
                (
                    charge_id,
                    prefix + ids if prefix else "",
                    transfer,
                    currency,
                    "acct_test1234567",
                    order_id,
                    "ursus-transfer-" + charge_id,
                    meta,
                    status,
                    1,
                    0.0,
                    code,
                    message,
                    0,
                    "",
                    0,
                    now,
                    now,
                )
            )
        charges.append(
            (
                seq,
                charge_id,
                "pi_" + ids,
                order_id,
                currency,
                amount,
                refunded,
                1,
                1,
                "succeeded",
                created,
                0,
                order_id,
                "" if actual is None else "txn_" + ids,
                actual,
                *split_cols,
                now,
            )
        )
        if len(charges) >= CHUNK:
            yield charges, transfers
            charges, transfers = [], []
    if charges:
        yield charges, transfers


def make_ledger(path: str | Path, rows: int, seed: int = 0) -> Path:
    """Create (or replace) a ledger at ``path`` holding ``rows`` charges; return the path."""
    path = Path(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    Ledger.open(f"sqlite:///{path}").close()  # the real schema, migrated
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # Bulk load: durability is irrelevant for a generated file, speed is not.
        db.execute("PRAGMA journal_mode = OFF")  # WAL would write every page twice
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -200000")
        db.execute("BEGIN")
        # Secondary indexes are rebuilt once at the end (a sort beats a million inserts);
        # the UNIQUE ones stay, and ids grow monotonically so they only append.
        indexes = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).fetchall()
        for name, _sql in indexes:
            db.execute(f'DROP INDEX "{name}"')
        for charges, transfers in _rows(rows, seed):
            db.executemany(_CHARGE_SQL, charges)
            db.executemany(_TRANSFER_SQL, transfers)
        for _name, sql in indexes:
            db.execute(sql)
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode = WAL")  # as Ledger.open left it
    finally:
        db.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    make_ledger(args.out, args.rows, args.seed)
    print(f"{args.rows} charges -> {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
