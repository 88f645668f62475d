"""``ursus`` / ``python -m ursus_desktop``: the desktop window (or --selftest, --version)."""

from __future__ import annotations

import argparse
import gc
import sys

from ursus_desktop import APP_NAME, __version__


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ursus", description=f"{APP_NAME} desktop window")
    parser.add_argument("--version", action="version", version=f"ursus {__version__}")
    parser.add_argument(
        "--selftest",
        action="store_true",
        help="run one sandbox sale end to end without a window, print the result and exit",
    )
    parser.add_argument(
        "--sandbox", action="store_true", help="start in sandbox mode (offline Stripe simulator)"
    )
    args, _qt_args = parser.parse_known_args(argv)  # Qt's own flags (-style ...) pass through
    return args


def main(argv: list[str] | None = None) -> int:
    from ursus_desktop import frozen

    if frozen.is_frozen():  # windowed bundle: an uncaught exception leaves crash.log + a dialog
        frozen.install_crash_handler()
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.selftest:
        from ursus_desktop.selftest import run_selftest

        return run_selftest()

    from ursus_desktop.app import display_problem

    problem = display_problem()
    if problem:
        # A window cannot open here: show the flow in the terminal instead (zero config).
        from ursus_desktop.selftest import run_headless_demo

        return run_headless_demo(problem)

    from PySide6.QtCore import QSettings

    from ursus_desktop.app import make_application
    from ursus_desktop.controller import GatewayController
    from ursus_desktop.main_window import MainWindow

    app = make_application([sys.argv[0]])
    sandbox = args.sandbox or QSettings().value("gateway/sandbox", False, type=bool)
    controller = GatewayController(sandbox=bool(sandbox))
    window = MainWindow(controller)
    controller.open_ledger()
    controller.load_secrets()
    window.show()
    # What exists now lives as long as the window: keep it out of the full garbage
    # collections, which stop every thread for 60-80 ms on a busy gateway.
    gc.collect()
    gc.freeze()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
