"""Export speed against a baseline: gateway.export.export_csv vs ``sqlite3 -csv``.

    python bench/bench_export.py [--rows 1000000] [--db bench/out/ledger-1000000.sqlite3]

The baseline asks the sqlite3 CLI for the same columns, formatted in SQL (ISO time,
major-unit amounts per currency exponent), so both sides do comparable work. Prints the
seconds of each and the ratio (target: export <= 2x the CLI).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import load_average, machine
from bench.make_ledger import make_ledger
from gateway.export import export_csv
from gateway.ledger import Ledger
from gateway.money import THREE_DECIMAL, ZERO_DECIMAL


def _in(codes: frozenset[str]) -> str:
    return ", ".join(f"'{c}'" for c in sorted(codes))


def _amount(expr: str) -> str:
    """SQL rendering minor units as a major-unit string, as gateway.money.to_major."""
    return (
        f"CASE WHEN {expr} IS NULL THEN ''"
        f" WHEN c.currency IN ({_in(ZERO_DECIMAL)}) THEN {expr}"
        f" WHEN c.currency IN ({_in(THREE_DECIMAL)})"
        f" THEN printf('%d.%03d', ({expr}) / 1000, ({expr}) % 1000)"
        f" ELSE printf('%d.%02d', ({expr}) / 100, ({expr}) % 100) END"
    )


# Built from constants only.
BASELINE_SQL = f"""
SELECT strftime('%Y-%m-%dT%H:%M:%SZ', c.created, 'unixepoch') AS created_utc,
  c.charge_id, c.payment_intent_id, c.order_id, upper(c.currency) AS currency,
  {_amount("c.amount")} AS gross,
  {_amount("c.stripe_fee")} AS stripe_fee,
  coalesce(c.fee_source, '') AS fee_source,
  {_amount("c.amount - c.stripe_fee")} AS net,
  {_amount("c.commission")} AS commission,
  {_amount("c.transfer_amount")} AS transfer_amount,
  coalesce(t.transfer_id, '') AS transfer_id,
  coalesce(t.status, 'none') AS transfer_status,
  {_amount("c.amount_refunded")} AS amount_refunded,
  CASE WHEN c.livemode THEN 'true' ELSE 'false' END AS livemode
FROM charges c LEFT JOIN transfers t ON t.charge_id = c.charge_id
ORDER BY c.seq;
"""  # noqa: S608


def bench(db: Path, out_dir: Path) -> tuple[float, float, int]:
    """(export seconds, sqlite3 CLI seconds, rows), each writing a file in ``out_dir``."""
    cli = shutil.which("sqlite3")
    if cli is None:
        raise SystemExit("the sqlite3 CLI is missing: apt-get install -y sqlite3")
    baseline_csv = out_dir / "baseline.csv"
    started = time.perf_counter()
    with baseline_csv.open("wb") as handle:
        subprocess.run(
            [cli, "-csv", "-header", str(db)],
            input=BASELINE_SQL.encode(),
            stdout=handle,
            check=True,
        )
    cli_seconds = time.perf_counter() - started

    ledger = Ledger.open(f"sqlite:///{db}")
    try:
        started = time.perf_counter()
        with (out_dir / "export.csv").open("w", encoding="utf-8", newline="") as handle:
            rows = export_csv(ledger, handle)
        export_seconds = time.perf_counter() - started
    finally:
        ledger.close()
    return export_seconds, cli_seconds, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="an existing ledger (default: generated)")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(machine())
    print(f"load average at the start: {load_average()}")
    db = args.db or args.out_dir / f"ledger-{args.rows}.sqlite3"
    if not db.exists():
        started = time.perf_counter()
        make_ledger(db, args.rows)
        print(f"generated {db} in {time.perf_counter() - started:.1f} s")
    export_seconds, cli_seconds, rows = bench(db, args.out_dir)
    print(f"rows:            {rows}")
    per_row = export_seconds / max(rows, 1) * 1e6
    print(f"export_csv:      {export_seconds:.2f} s ({per_row:.1f} us/row)")
    print(f"sqlite3 -csv:    {cli_seconds:.2f} s")
    ratio = export_seconds / cli_seconds
    print(f"ratio:           {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'MISSED'})")
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
