"""Suite 2: 30% of Stripe's charge and transfer requests fail -> every transfer made exactly once.

The sandbox fails a seeded 30% of ``/v1/charges/*`` and ``/v1/transfers*``
requests: 500, 429 without ``Stripe-Should-Retry``, connection reset before
processing, reset *after* processing (the answer is lost, the transfer exists),
and a reply slower than the client's read timeout (the request completes at
Stripe after the client gave up). The gateway's StripeGateway runs with a 1 s
read timeout (constructor argument) and the processor's backoff is shortened
(``fast_processor_backoff``: module constants, there is no setting).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from reliability_support import (
    Deliverer,
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
from gateway.stripe_api import StripeGateway

# 30% in all, per request (see faults.add below); slow costs a full client timeout,
# so it is the rarest.
READ_TIMEOUT = 0.5


def run_faults(
    sandbox: SandboxServer,
    started: list[GatewayServer],
    tmp_path: Path,
    n: int,
    client_retries: int,
) -> None:
    sales = make_sales(sandbox, varied_amounts(n, seed=n + client_retries), prefix="fault")
    faults = sandbox.faults
    faults.should_retry_header = False  # a 429 the stripe client will not retry itself
    faults.slow_seconds = READ_TIMEOUT * 1.5
    for path in ("/v1/charges/*", "/v1/transfers*"):
        faults.add(path, error_500=0.08, error_429=0.08, reset=0.06, reset_after=0.06, slow=0.02)

    stripe = StripeGateway(
        sandbox.secret_key,
        api_base=sandbox.url,
        timeout=(2.0, READ_TIMEOUT),
        max_network_retries=client_retries,
    )
    server = GatewayServer(gateway_config(sandbox, tmp_path), stripe=stripe)
    started.append(server)
    server.start()
    db = tmp_path / "data" / "ursus.sqlite3"
    deliverer = Deliverer(server.webhook_url, sandbox.webhook_secret, 8)
    try:
        results = deliverer.deliver_all([e for sale in sales for e in sale.events])
    finally:
        deliverer.close()
    assert [d.status for d in results] == [200] * len(results)

    try:
        wait_until(lambda: transfers_done(db, sales), 240, 0.1, f"{n} transfers under faults")
        wait_until(
            lambda: set(event_statuses(db).values()) == {"processed"}, 60, 0.1, "events processed"
        )
    finally:
        faults.clear()
        server.stop()
        stripe.close()

    injected = Counter(str(kind) for _, _, kind in faults.injected)
    on_transfers = sum(1 for _, path, _ in faults.injected if path.startswith("/v1/transfers"))
    with sandbox.state.lock:
        requests = list(sandbox.state.requests)
    matching = [r for r in requests if r.path.startswith(("/v1/charges/", "/v1/transfers"))]
    posts = [r for r in requests if r.method == "POST" and r.path == "/v1/transfers"]
    # The faults really happened, on both kinds of request and in every flavour.
    assert set(injected) == {"500", "429", "reset", "reset_after", "slow"}
    assert 0 < on_transfers < len(faults.injected)
    rate = len(faults.injected) / len(matching)
    assert 0.2 < rate < 0.4, rate
    # Every retry of a transfer re-used the charge's one idempotency key.
    assert {r.idempotency_key for r in posts} == {f"ursus-transfer-{s.charge_id}" for s in sales}

    rec = reconcile(db, sandbox, sales)
    assert rec.lost == [] and rec.duplicated == [] and rec.mismatched == []
    assert rec.transfers_at_stripe == rec.ledger_created == n == len(sandbox.state.transfers)
    assert rec.gross_total == rec.split_total
    print(
        f"\nRESULT stripe_faults: charges={n} client_retries={client_retries} "
        f"stripe_requests={len(matching)} faults={len(faults.injected)} ({rate:.0%}) "
        f"by_kind={dict(sorted(injected.items()))} transfer_posts={len(posts)} "
        f"transfers={rec.transfers_at_stripe} lost={len(rec.lost)} "
        f"duplicated={len(rec.duplicated)}"
    )


@pytest.mark.usefixtures("fast_processor_backoff")
@pytest.mark.parametrize(
    ("client_retries", "n"),
    [
        pytest.param(2, 100, id="production-client-retries"),
        pytest.param(0, 60, id="processor-retries-only"),
    ],
)
def test_faulty_stripe_every_transfer_exactly_once(
    sandbox: SandboxServer,
    started: list[GatewayServer],
    tmp_path: Path,
    client_retries: int,
    n: int,
) -> None:
    run_faults(sandbox, started, tmp_path, n, client_retries)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_processor_backoff")
@pytest.mark.parametrize("client_retries", [2, 0])
def test_faulty_stripe_every_transfer_exactly_once_1000(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path, client_retries: int
) -> None:
    run_faults(sandbox, started, tmp_path, 1000, client_retries)
