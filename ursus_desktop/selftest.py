"""``ursus --selftest``: Qt loads, and one sandbox sale goes through end to end."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

EXPECTED = (320, 97, 9583)  # DESIGN §3: 10000 usd -> fee 320, commission 97, transfer 9583


def run_selftest() -> int:
    """0 and one ``selftest ok: ...`` line on success; non-zero and the reason otherwise."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from PySide6.QtWidgets import QApplication

        from gateway.config import GatewayConfig, Secrets, Settings
        from gateway.models import TransferStatus
        from gateway.service import GatewayServer
        from ursus_desktop import __version__, resources

        app = QApplication.instance() or QApplication([sys.argv[0]])
        resources.path("ursus.qss")
        resources.path("icons/ursus.svg")
    except Exception as exc:
        print(f"selftest FAILED: cannot load Qt or URSUS ({type(exc).__name__}: {exc})")
        return 1

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
        try:
            server.start()
            charge_id = server.simulate_payment(10000, "usd")
            status = server.wait_for_transfer(charge_id, timeout=20.0)
            view = server.ledger.get_charge(charge_id)
        except Exception as exc:
            print(f"selftest FAILED: {type(exc).__name__}: {exc}")
            return 1
        finally:
            server.stop()
    if view is None or status is not TransferStatus.CREATED:
        print(f"selftest FAILED: transfer of {charge_id} is {status}, expected created")
        return 1
    split = (view.stripe_fee, view.commission, view.transfer_amount)
    if split != EXPECTED:
        print(f"selftest FAILED: split {split} of 10000 usd, expected {EXPECTED}")
        return 1
    del app
    print(
        f"selftest ok: ursus {__version__}, Qt loaded, sandbox sale {charge_id} 10000 usd -> "
        f"fee {split[0]}, commission {split[1]}, transfer {split[2]} ({view.transfer_id})"
    )
    return 0
