"""Suite 1: every charge event delivered three times, shuffled, 32 at a time -> one transfer each.

A real GatewayServer (waitress on loopback, SQLite ledger, processor thread)
talks to the sandbox as Stripe. Each charge's ``charge.succeeded`` and
``charge.updated`` are POSTed three times each, in random order, by 32
concurrent clients; the processor races the webhook threads the whole time.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from reliability_support import (
    Deliverer,
    db_rows,
    event_statuses,
    gateway_config,
    make_sales,
    reconcile,
    transfers_done,
    varied_amounts,
    wait_until,
)

from gateway.sandbox import SandboxServer
from gateway.service import GatewayServer

COPIES = 3
CONCURRENCY = 32


def run_duplicates(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path, n: int
) -> None:
    sales = make_sales(sandbox, varied_amounts(n, seed=n), prefix="dup")
    server = GatewayServer(gateway_config(sandbox, tmp_path))
    started.append(server)
    server.start()
    db = tmp_path / "data" / "ursus.sqlite3"

    deliveries = [e for sale in sales for e in sale.events] * COPIES
    random.Random(n).shuffle(deliveries)
    deliverer = Deliverer(server.webhook_url, sandbox.webhook_secret, CONCURRENCY)
    started_at = time.monotonic()
    try:
        results = deliverer.deliver_all(deliveries)
    finally:
        deliverer.close()
    delivered_in = time.monotonic() - started_at
    made_while_delivering = len(sandbox.state.transfers)

    statuses = [d.status for d in results]
    assert statuses.count(200) == len(deliveries), {s: statuses.count(s) for s in set(statuses)}
    first = [d for d in results if d.body == b'{"received":true}']
    unique_events = {e for sale in sales for e, _ in sale.events}
    # Exactly one delivery of each event was the one that stored it.
    assert sorted(d.event_id for d in first) == sorted(unique_events)

    wait_until(lambda: transfers_done(db, sales), 300, 0.05, f"{n} transfers")
    all_paid_in = time.monotonic() - started_at
    wait_until(
        lambda: set(event_statuses(db).values()) == {"processed"}, 30, 0.05, "events processed"
    )
    stored = event_statuses(db)
    assert set(stored) == unique_events  # none lost, none invented

    rec = reconcile(db, sandbox, sales)
    assert rec.lost == [] and rec.duplicated == [] and rec.mismatched == []
    assert rec.transfers_at_stripe == rec.ledger_created == n
    assert rec.gross_total == rec.split_total
    # The sandbox made exactly n transfers in all: nothing for another charge either.
    assert len(sandbox.state.transfers) == n
    print(
        f"\nRESULT duplicates: charges={n} deliveries={len(deliveries)} "
        f"distinct_events={len(unique_events)} concurrency={CONCURRENCY} "
        f"transfers={rec.transfers_at_stripe} lost={len(rec.lost)} "
        f"duplicated={len(rec.duplicated)} gross={rec.gross_total} split={rec.split_total} "
        f"delivered_in={delivered_in:.1f}s transfers_made_while_delivering={made_while_delivering} "
        f"all_paid_in={all_paid_in:.1f}s"
    )


def test_each_event_three_times_shuffled_makes_exactly_one_transfer_per_charge(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path
) -> None:
    run_duplicates(sandbox, started, tmp_path, 200)


@pytest.mark.slow
def test_each_event_three_times_shuffled_2000_charges(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path
) -> None:
    run_duplicates(sandbox, started, tmp_path, 2000)


def test_a_refund_before_the_transfer_still_pays_the_vendor_once(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path
) -> None:
    """Race: a partial refund lands while the charge still waits for its fee (async capture).

    DESIGN §2: the platform absorbs refunds by default, so the vendor's transfer is
    still due, exactly once. The window is real: a charge waits for its balance
    transaction (``fee_wait_seconds``, 15 min by default) before its transfer is made.
    Stripe refuses a transfer larger than what is left of the source charge; since
    finding F3 the failure says what to do, and "Retry transfer" pays the vendor
    from the platform's available balance, once.
    """
    state = sandbox.state
    state.hold_balance_transactions = True  # the fee arrives later, with charge.updated
    first = len(state.events)
    pi = state.create_payment_intent(
        {
            "amount": "10000",
            "currency": "usd",
            "metadata": {"order_id": "race-refund"},
            "transfer_group": "race-refund",
            "confirm": "true",
            "payment_method": "pm_card_visa",
        }
    )
    charge_id = str(pi["latest_charge"])
    server = GatewayServer(gateway_config(sandbox, tmp_path))
    started.append(server)
    server.start()
    db = tmp_path / "data" / "ursus.sqlite3"
    deliverer = Deliverer(server.webhook_url, sandbox.webhook_secret, 1)

    def deliver_new() -> None:
        nonlocal first
        with state.lock:
            new = [e for e in state.events[first:] if e["type"].startswith("charge.")]
            first = len(state.events)
        done = deliverer.deliver_all([(e["id"], json.dumps(e, indent=2).encode()) for e in new])
        assert [d.status for d in done] == [200] * len(done)

    try:
        deliver_new()  # charge.succeeded: captured, no fee yet -> the gateway waits
        wait_until(
            lambda: db_rows(db, "SELECT count(*) FROM charges") == [(1,)], 10, 0.02, "charge"
        )
        state.create_refund({"charge": charge_id, "amount": "5000"})
        deliver_new()  # charge.refunded
        assert state.release_balance_transactions() == 1
        deliver_new()  # charge.updated with the fee -> the transfer is due now
        wait_until(
            lambda: (
                db_rows(
                    db,
                    "SELECT count(*) FROM transfers WHERE status NOT IN ('pending')",
                )
                == [(1,)]
            ),
            20,
            0.05,
            "the transfer to settle",
        )
    finally:
        deliverer.close()
    [(status, code, message, amount)] = db_rows(
        db, "SELECT status, error_code, error_message, amount FROM transfers"
    )
    assert db_rows(db, "SELECT amount_refunded FROM charges") == [(5000,)]
    assert (status, code) == ("failed", "amount_too_large")
    assert "Retry transfer" in message  # the owner is told what to do
    assert state.transfers == {}  # the refused attempt made nothing

    state.add_available(amount, "usd")  # the platform's balance from earlier sales
    assert server.retry_transfer(charge_id)
    wait_until(
        lambda: db_rows(db, "SELECT status FROM transfers") == [("created",)],
        20,
        0.05,
        "the retried transfer",
    )
    assert not server.retry_transfer(charge_id)  # a second click pays nothing more
    made = [t for t in state.transfers.values() if t["metadata"].get("charge_id") == charge_id]
    assert [(t["amount"], t["source_transaction"]) for t in made] == [(amount, None)]
    assert amount == 9583  # the whole split of 100.00: the platform absorbed the refund
    [(tr_id,)] = db_rows(db, "SELECT transfer_id FROM transfers")
    assert tr_id == made[0]["id"]
