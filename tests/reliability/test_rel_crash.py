"""Suite 3: the headless gateway is SIGKILLed mid-burst and mid-processing, then restarted.

``ursus-gateway serve`` runs as a subprocess (secrets in its environment,
``URSUS_STRIPE_API_BASE`` pointing at the sandbox in this process, its own data
dir, port 0). It is killed with SIGKILL while signed webhooks are arriving 16 at
a time, restarted, killed again while its processor is creating transfers, and
restarted again. Every event that got a 200 must be processed without being
delivered again, the restarted gateway must pick up the pending work by itself,
and no charge may be paid twice at Stripe. The deliveries that got no 200 are
then retried, as Stripe does, and every sale ends with exactly one transfer.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from reliability_support import (
    Deliverer,
    Delivery,
    GatewayProcess,
    db_rows,
    event_statuses,
    gateway_env,
    make_sales,
    reconcile,
    transfers_done,
    varied_amounts,
    wait_until,
)

from gateway.sandbox import SandboxServer

CONCURRENCY = 16


class Gateways:
    """Every gateway subprocess of a test, killed and reaped at the end whatever happens."""

    def __init__(self, sandbox: SandboxServer, tmp: Path) -> None:
        self.env = gateway_env(sandbox, tmp)
        self.tmp = tmp
        self.all: list[GatewayProcess] = []

    def start(self) -> GatewayProcess:
        gw = GatewayProcess(
            ["--data-dir", str(self.tmp / "data"), "--port", "0"], self.env, self.tmp
        )
        self.all.append(gw)
        gw.start()
        return gw

    def kill_all(self) -> None:
        for gw in self.all:
            gw.kill()


@pytest.fixture
def gateways(sandbox: SandboxServer, tmp_path: Path):  # type: ignore[no-untyped-def]
    gws = Gateways(sandbox, tmp_path)
    try:
        yield gws
    finally:
        gws.kill_all()


def burst_until_killed(
    gw: GatewayProcess, secret: str, events: list[tuple[str, bytes]], kill_after: int
) -> list[Delivery]:
    """POST every event 16 at a time; SIGKILL the gateway once ``kill_after`` got a 200."""
    ok = 0
    lock = threading.Lock()

    def on_done(d: Delivery) -> None:
        nonlocal ok
        with lock:
            if d.status == 200:
                ok += 1
                if ok == kill_after:
                    gw.kill()

    deliverer = Deliverer(gw.url + "/webhook", secret, CONCURRENCY, timeout=10)
    try:
        return deliverer.deliver_all(events, on_done)
    finally:
        deliverer.close()


def run_crash(sandbox: SandboxServer, gateways: Gateways, tmp: Path, n: int, kills: int) -> None:
    sales = make_sales(sandbox, varied_amounts(n, seed=7 * n), prefix="crash")
    events = [e for sale in sales for e in sale.events]
    random.Random(n).shuffle(events)
    db = tmp / "data" / "ursus.sqlite3"
    rng = random.Random(kills)
    acked: set[str] = set()
    pending_at_kill: list[int] = []
    unanswered = 0
    made_at_kill: list[int] = []
    pending_transfers_at_kill: list[int] = []

    # Killed in the middle of bursts: each burst re-sends what never got a 200.
    remaining = events
    for _ in range(kills):
        gw = gateways.start()
        kill_after = max(1, int(len(remaining) * rng.uniform(0.3, 0.6)))
        results = burst_until_killed(gw, sandbox.webhook_secret, remaining, kill_after)
        assert gw.proc is not None and gw.proc.returncode == -9  # really SIGKILLed
        acked |= {d.event_id for d in results if d.status == 200}
        unanswered += sum(1 for d in results if d.status != 200)
        assert all(d.status in (200, None) for d in results), {d.status for d in results}
        statuses = event_statuses(db)
        # Durability: everything answered 200 was committed before the answer.
        assert acked <= set(statuses)
        pending_at_kill.append(sum(1 for s in statuses.values() if s == "pending"))
        remaining = [e for e in events if e[0] not in acked]

    # Killed while the processor is busy with transfers (no deliveries running).
    gw = gateways.start()
    before = len(sandbox.state.transfers)
    wait_until(lambda: len(sandbox.state.transfers) >= before + 3, 60, 0.01, "transfers resume")
    gw.kill()
    made_at_kill.append(len(sandbox.state.transfers))
    # The processor handles the inbox first, then creates the queued transfers: the
    # kill lands among the transfers, some still pending in the ledger.
    queued = db_rows(db, "SELECT count(*) FROM transfers WHERE status = 'pending'")[0][0]
    assert queued > 0, "killed too late to matter"
    pending_transfers_at_kill.append(queued)

    # Restarted without any delivery: every acknowledged event gets processed.
    gw = gateways.start()
    acked_sales = [s for s in sales if any(e in acked for e, _ in s.events)]
    wait_until(lambda: transfers_done(db, acked_sales), 120, 0.05, "acknowledged work resumed")
    wait_until(
        lambda: all(event_statuses(db)[e] == "processed" for e in acked),
        60,
        0.05,
        "acknowledged events processed",
    )
    resumed_transfers = len(sandbox.state.transfers)

    # Stripe re-sends what never got a 200; every sale ends with one transfer.
    retry = [e for e in events if e[0] not in acked]
    deliverer = Deliverer(gw.url + "/webhook", sandbox.webhook_secret, CONCURRENCY)
    try:
        redelivered = deliverer.deliver_all(retry)
    finally:
        deliverer.close()
    assert [d.status for d in redelivered] == [200] * len(retry)
    wait_until(lambda: transfers_done(db, sales), 120, 0.05, "every transfer")
    wait_until(lambda: set(event_statuses(db).values()) == {"processed"}, 60, 0.05, "all processed")
    assert gw.terminate() == 0  # and a clean stop still works after all that

    rec = reconcile(db, sandbox, sales)
    assert rec.lost == [] and rec.duplicated == [] and rec.mismatched == []
    assert rec.transfers_at_stripe == rec.ledger_created == n == len(sandbox.state.transfers)
    transfer_posts = sum(
        1 for r in sandbox.state.requests if r.method == "POST" and r.path == "/v1/transfers"
    )
    # The restarted processor found its own transfer rows (attempts) and events (status).
    stuck = db_rows(db, "SELECT count(*) FROM transfers WHERE status != 'created'")[0][0]
    assert stuck == 0
    print(
        f"\nRESULT crash: charges={n} events={len(events)} sigkills={kills + 1} "
        f"acked_before_kills={len(acked)} unanswered_at_kills={unanswered} "
        f"pending_in_inbox_at_kills={pending_at_kill} transfers_at_processing_kill={made_at_kill} "
        f"pending_transfers_at_processing_kill={pending_transfers_at_kill} "
        f"transfer_posts={transfer_posts} "
        f"transfers_after_resume_without_redelivery={resumed_transfers} redelivered={len(retry)} "
        f"transfers={rec.transfers_at_stripe} lost={len(rec.lost)} duplicated={len(rec.duplicated)}"
    )


def test_sigkill_mid_burst_and_mid_processing_loses_and_duplicates_nothing(
    sandbox: SandboxServer, gateways: Gateways, tmp_path: Path
) -> None:
    run_crash(sandbox, gateways, tmp_path, 150, kills=1)


@pytest.mark.slow
def test_repeated_sigkills_2000_charges(
    sandbox: SandboxServer, gateways: Gateways, tmp_path: Path
) -> None:
    run_crash(sandbox, gateways, tmp_path, 2000, kills=5)


def test_sigkill_while_a_transfer_is_in_flight_at_stripe(
    sandbox: SandboxServer, gateways: Gateways, tmp_path: Path
) -> None:
    """The transfer request has reached Stripe when the gateway dies; Stripe completes it.

    The restarted gateway finds the transfer row still pending and sends the same
    request with the same idempotency key: Stripe answers with the transfer it
    made (or makes it, if the first request is still being handled, and replays
    that to the first): one transfer, recorded with Stripe's id.
    """
    [sale] = make_sales(sandbox, [(12_345, "usd")], prefix="inflight")
    db = tmp_path / "data" / "ursus.sqlite3"
    faults = sandbox.faults
    faults.slow_seconds = 1.5
    faults.fail_next("/v1/transfers", "slow", method="POST")
    gw = gateways.start()
    deliverer = Deliverer(gw.url + "/webhook", sandbox.webhook_secret, 2)
    try:
        assert [d.status for d in deliverer.deliver_all(sale.events)] == [200, 200]
    finally:
        deliverer.close()
    # The POST is at the sandbox, sleeping before it creates the transfer: kill now.
    wait_until(lambda: faults.injected, 20, 0.005, "the transfer request at Stripe")
    gw.kill()
    assert db_rows(db, "SELECT status, attempts FROM transfers") == [("pending", 0)]
    # Stripe finishes the request for a client that is gone.
    wait_until(lambda: sandbox.state.transfers, 10, 0.01, "Stripe to complete the transfer")

    gateways.start()
    wait_until(lambda: transfers_done(db, [sale]), 30, 0.05, "the transfer recorded")
    [made] = sandbox.state.transfers.values()
    assert db_rows(db, "SELECT transfer_id FROM transfers") == [(made["id"],)]
    posts = [r for r in sandbox.state.requests if r.method == "POST" and r.path == "/v1/transfers"]
    assert len(posts) == 2 and {r.idempotency_key for r in posts} == {
        f"ursus-transfer-{sale.charge_id}"
    }
    rec = reconcile(db, sandbox, [sale])
    assert rec.lost == rec.duplicated == rec.mismatched == []
