"""Render the main window with sandbox data to docs/screenshot.png (offscreen ``grab()``).

    python scripts/screenshot.py [--out docs/screenshot.png]

Runs the gateway in sandbox mode in a temporary folder, sends a few simulated
sales through it (one with a failed transfer), and grabs the window.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SALES = ((10000, "usd"), (2599, "usd"), (125000, "usd"), (4900, "eur"), (780, "usd"))


def _wait(app, predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if predicate():
            return True
        time.sleep(0.02)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = parser.parse_args(argv)

    import dataclasses

    import keyring
    from keyring.backends.null import Keyring as NullKeyring

    from gateway.config import Settings
    from ursus_desktop.app import make_application, set_identity

    keyring.set_keyring(NullKeyring())  # never touch the user's keyring for a picture
    with tempfile.TemporaryDirectory(prefix="ursus-shot-") as tmp:
        base = Path(tmp)
        os.environ["URSUS_CONFIG_DIR"] = str(base / "config")
        set_identity()
        from PySide6.QtCore import QSettings

        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(base))
        app = make_application([sys.argv[0]])
        from ursus_desktop.controller import GatewayController
        from ursus_desktop.main_window import MainWindow

        controller = GatewayController(
            data_dir=base / "data",
            log_dir=base / "logs",
            config_path=base / "settings.json",
            sandbox=True,
        )
        controller.settings = dataclasses.replace(
            Settings(), port=0, platform_name="Bear Goods", public_url="https://shop.example.com"
        )
        window = MainWindow(controller, tray=False, first_run_prompt=False)
        window.resize(1280, 720)
        window.show()
        controller.open_ledger()
        _wait(app, lambda: controller.ledger is not None)
        controller.start()
        if not _wait(app, lambda: controller.is_running):
            print("the sandbox gateway did not start", file=sys.stderr)
            return 1
        server = controller.server
        assert server is not None
        charges = [server.simulate_payment(amount, currency) for amount, currency in SALES]
        for charge_id in charges:
            server.wait_for_transfer(charge_id, timeout=10)
        ledger = controller.ledger
        assert ledger is not None
        _wait(app, lambda: window.model.rowCount() == len(SALES))
        window.table.selectRow(0)
        _wait(app, lambda: window.detail.charge is not None, 2)
        _wait(app, lambda: window.detail.timeline.count() > 0, 2)  # read off the GUI thread
        app.processEvents()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(str(args.out))
        controller.shutdown()
        window.close()
    print(f"wrote {args.out}" if ok else f"could not write {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
