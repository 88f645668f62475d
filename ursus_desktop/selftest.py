"""``ursus --selftest`` and the headless demo: one sandbox sale end to end.

The selftest proves an install (or a bundle) works: Qt loads, the gateway starts
in sandbox mode on a free port, one 10000 usd sale goes through, the split is
320/97/9583. The demo is what ``ursus`` shows on a machine without a display:
the same sale, told step by step, instead of a window that cannot open.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EXPECTED = (320, 97, 9583)  # DESIGN §3: 10000 usd -> fee 320, commission 97, transfer 9583


@dataclass(frozen=True, slots=True)
class SaleResult:
    charge_id: str
    order_id: str
    transfer_id: str
    destination: str
    gateway_url: str
    split: tuple[int | None, int | None, int | None]
    fee_source: str
    status: str


def sandbox_sale(
    amount: int = 10000, currency: str = "usd", say: Callable[[str], None] | None = None
) -> SaleResult:
    """Start a sandbox gateway in a temp dir, sell once, stop; raises on any failure."""
    from gateway.config import GatewayConfig, Secrets, Settings
    from gateway.models import TransferStatus
    from gateway.money import to_major
    from gateway.service import GatewayServer

    def tell(text: str) -> None:
        if say is not None:
            say(text)

    with tempfile.TemporaryDirectory(prefix="ursus-selftest-") as tmp:
        settings = dataclasses.replace(Settings(), port=0, host="127.0.0.1")
        config = GatewayConfig(
            secrets=Secrets(),
            settings=settings,
            data_dir=Path(tmp) / "data",
            log_dir=Path(tmp) / "logs",
            sandbox=True,
        )
        server = GatewayServer(config)
        server.start()
        try:
            url = server.url
            tell(f"  gateway (sandbox mode) listening on {url}")
            charge_id = server.simulate_payment(amount, currency)
            status = server.wait_for_transfer(charge_id, timeout=20.0)
            view = server.ledger.get_charge(charge_id)
            tell(
                f"  1. order {view.order_id if view else '?'}: POST /create-payment-intent, "
                f"the customer pays {to_major(amount, currency)} {currency.upper()} "
                f"(charge {charge_id})"
            )
            destination = server.config.secrets.connected_account_id
        finally:
            server.stop()
    if view is None:
        raise RuntimeError(f"charge {charge_id} never reached the ledger")
    result = SaleResult(
        charge_id=charge_id,
        order_id=view.order_id,
        transfer_id=view.transfer_id,
        destination=destination,
        gateway_url=url,
        split=(view.stripe_fee, view.commission, view.transfer_amount),
        fee_source=str(view.fee_source),
        status=str(status),
    )
    if status is not TransferStatus.CREATED:
        raise RuntimeError(f"transfer of {charge_id} is {status}, expected created")
    fee, commission, transfer = result.split
    tell(
        f"  2. Stripe's signed webhooks stored; split: Stripe fee "
        f"{to_major(fee or 0, currency)} ({result.fee_source}), commission "
        f"{to_major(commission or 0, currency)}, vendor {to_major(transfer or 0, currency)}"
    )
    tell(f"  3. transfer {result.transfer_id} created to the vendor's account {destination}")
    return result


def run_selftest() -> int:
    """0 and one ``selftest ok: ...`` line on success; non-zero and the reason otherwise."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from PySide6.QtWidgets import QApplication

        from ursus_desktop import __version__, resources

        app = QApplication.instance() or QApplication([sys.argv[0]])
        resources.path("ursus.qss")
        resources.path("icons/ursus.svg")
    except Exception as exc:
        print(f"selftest FAILED: cannot load Qt or URSUS ({type(exc).__name__}: {exc})")
        return 1
    try:
        result = sandbox_sale()
    except Exception as exc:
        print(f"selftest FAILED: {type(exc).__name__}: {exc}")
        return 1
    if result.split != EXPECTED:
        print(f"selftest FAILED: split {result.split} of 10000 usd, expected {EXPECTED}")
        return 1
    del app
    fee, commission, transfer = result.split
    print(
        f"selftest ok: ursus {__version__}, Qt loaded, sandbox sale {result.charge_id} "
        f"10000 usd -> fee {fee}, commission {commission}, transfer {transfer} "
        f"({result.transfer_id})"
    )
    return 0


def run_headless_demo(reason: str) -> int:
    """What ``ursus`` does without a display: say why, then show one sandbox sale."""
    print(reason)
    print("\nMeanwhile, here is one sale going through URSUS in sandbox mode (offline):")
    try:
        sandbox_sale(say=print)
    except Exception as exc:
        print(f"The sandbox sale failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(
        "\nNo real money moved. On a desktop, `ursus` opens the window; on a server run "
        "`ursus-gateway serve --sandbox`, or with your keys in environment variables."
    )
    return 0
