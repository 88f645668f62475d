"""End to end: a sale's webhook received -> its transfer CREATED in the ledger, via the sandbox.

    python bench/bench_e2e.py [--sales 2000] [--rate 0] [--quick]

The sandbox (``gateway.sandbox.SandboxServer``, zero latency) runs in its own process
as Stripe would, and delivers each sale's events (``payment_intent.created``,
``charge.succeeded``, ``payment_intent.succeeded``, ``charge.updated``) as signed
webhooks to a real ``GatewayServer`` in this process, whose processor re-fetches the
charge and creates the transfer at the sandbox. By default one sale is in flight at a
time (the next starts when the previous transfer is CREATED: latency without
queueing); ``--rate N`` starts N sales per second instead (an open loop).

Latency per sale, from the ledger's own timestamps: the ``charge.succeeded`` inbox
row's ``received_at`` (just before the webhook's 200) to the transfer row's
``updated_at`` when it became CREATED; also from the moment the sandbox confirmed the
payment. Prints p50/p99/max (target: p50 <= 20 ms).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    SandboxProcess,
    cpu_seconds,
    gateway_config,
    load_average,
    machine,
    percentile,
    wait_for,
)
from gateway.models import TransferStatus
from gateway.service import GatewayServer

# Where the time goes: the processor's own timeline entries, in order, per charge.
STEPS_SQL = """
SELECT charge_id, kind, min(at) FROM timeline
WHERE kind IN ('event', 'fee', 'transfer_request', 'transfer_created')
GROUP BY charge_id, kind
"""
STEPS = (
    ("received", "event", "webhook 200 -> charge re-fetched and stored"),
    ("event", "fee", "-> split computed, transfer row queued"),
    ("fee", "transfer_request", "-> transfer request begins (rest of the batch)"),
    ("transfer_request", "transfer_created", "-> transfer created at Stripe and recorded"),
)

STATUS_SQL = "SELECT status FROM transfers WHERE charge_id = ?"
TIMES_SQL = """
SELECT t.charge_id, e.received_at, t.updated_at, t.status
FROM transfers t JOIN events e ON e.object_id = t.charge_id AND e.type = 'charge.succeeded'
"""


def wait_created(probe: sqlite3.Connection, charge_id: str) -> bool:
    """Block until the charge's transfer is CREATED, polling every 2 ms.

    A raw read on its own connection, not Ledger.get_charge (which builds SQLAlchemy
    statements) nor a ledger listener (a sale commits ~20 times): the bench must add
    as little CPU as it can to the gateway process it measures. The latencies come
    from the ledger's timestamps, so the poll interval does not change them.
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = probe.execute(STATUS_SQL, (charge_id,)).fetchone()
        if row is not None and row[0] == TransferStatus.CREATED.value:
            return True
        time.sleep(0.002)
    return False


def summary(name: str, ms: list[float]) -> str:
    return (
        f"{name:<44} p50 {percentile(ms, 50):6.1f} ms  p99 {percentile(ms, 99):6.1f} ms"
        f"  max {max(ms):6.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=0.0, help="sales/s (0: one at a time)")
    parser.add_argument("--quick", action="store_true", help="300 sales")
    args = parser.parse_args(argv)
    if args.quick:
        args.sales = 300
    print(machine())
    print(f"load average at the start: {load_average()}")
    mode = f"{args.rate:g} sales/s (open loop)" if args.rate else "one sale in flight at a time"
    print(f"{args.sales} sandbox sales of 100.00 USD, {mode}")
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, SandboxProcess() as sandbox:
        server = GatewayServer(gateway_config(Path(tmp), sandbox))
        server.start()
        sandbox.set_webhook_url(server.webhook_url)
        db = server.config.data_dir / "ursus.sqlite3"
        probe = sqlite3.connect(db, check_same_thread=False)
        started_at: dict[str, float] = {}
        try:
            for _ in range(20):  # warm-up: imports, connections, first pages
                charge_id, _t = sandbox.sale()
                wait_created(probe, charge_id)
            warm = set(started_at)
            t0 = time.perf_counter()
            cpu0, sandbox_cpu0 = cpu_seconds(), cpu_seconds(sandbox.pid)
            for i in range(args.sales):
                if args.rate:
                    delay = t0 + i / args.rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                charge_id, started = sandbox.sale()
                started_at[charge_id] = started
                if not args.rate and not wait_created(probe, charge_id):
                    raise SystemExit(f"no transfer for {charge_id} within 30 s")
            if args.rate:
                wait_for(
                    lambda: (
                        server.ledger.counts().pending_transfers == 0
                        and sandbox.transfers() >= args.sales + 20
                    ),
                    120,
                    0.05,
                )
            wall = time.perf_counter() - t0
            cpu = (cpu_seconds() - cpu0) / args.sales * 1000
            sandbox_cpu = (cpu_seconds(sandbox.pid) - sandbox_cpu0) / args.sales * 1000
            sandbox.wait_idle(10)
        finally:
            probe.close()
            server.stop()
        with sqlite3.connect(db) as conn:
            rows = conn.execute(TIMES_SQL).fetchall()
            steps: dict[str, dict[str, float]] = {}
            for charge_id, kind, at in conn.execute(STEPS_SQL):
                steps.setdefault(charge_id, {})[kind] = at
    measured = [r for r in rows if r[0] in started_at and r[0] not in warm]
    created = [r for r in measured if r[3] == TransferStatus.CREATED.value]
    from_webhook = [(r[2] - r[1]) * 1000 for r in created]
    from_sale = [(r[2] - started_at[r[0]]) * 1000 for r in created]
    print(f"transfers CREATED: {len(created)} of {args.sales} sales in {wall:.1f} s")
    print(f"throughput: {args.sales / wall:.1f} sales/s")
    print(
        f"CPU per sale: gateway process {cpu:.1f} ms, sandbox process {sandbox_cpu:.1f} ms"
        " (the sandbox plays Stripe: its share is not the gateway's cost)"
    )
    print(summary("charge.succeeded received -> transfer CREATED", from_webhook))
    print(summary("sandbox confirmed payment -> transfer CREATED", from_sale))
    print("median of each step (the processor's timeline entries):")
    for r in created:
        steps.get(r[0], {})["received"] = r[1]
    for first, then, text in STEPS:
        gaps = [
            (st[then] - st[first]) * 1000
            for cid, st in steps.items()
            if cid in started_at and cid not in warm and first in st and then in st
        ]
        if gaps:
            print(f"  {text:<58} {percentile(gaps, 50):6.1f} ms")
    p50 = percentile(from_webhook, 50)
    print(f"target p50 <= 20 ms: {'met' if p50 <= 20 else 'MISSED'} ({p50:.1f} ms)")
    print(f"load average at the end: {load_average()}")
    return 0 if len(created) == args.sales else 1


if __name__ == "__main__":
    raise SystemExit(main())
