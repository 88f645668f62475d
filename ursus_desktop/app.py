"""Application setup shared by ``main()``, the screenshot script and the tests."""

from __future__ import annotations

import os
import sys

from PySide6.QtCore import QCoreApplication, QSettings
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from ursus_desktop import APP_NAME, ORG_NAME, __version__, resources


def display_problem(env: dict[str, str] | None = None, platform: str = sys.platform) -> str:
    """Why a window cannot open here (Linux without a display), or ''."""
    env = dict(os.environ) if env is None else env
    if not platform.startswith("linux"):
        return ""
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("QT_QPA_PLATFORM"):
        return ""
    return (
        "The URSUS window needs a graphical display, and none was found (DISPLAY and "
        "WAYLAND_DISPLAY are unset).\n"
        "On a server run the gateway headless instead:  ursus-gateway serve --sandbox  (or with "
        "your keys in environment variables), or check this install with:  ursus --selftest"
    )


def set_identity() -> None:
    """Names QSettings uses for the window layout (INI in the user's config dir)."""
    QCoreApplication.setOrganizationName(ORG_NAME)
    QCoreApplication.setApplicationName(APP_NAME)
    QCoreApplication.setApplicationVersion(__version__)
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)


def make_application(argv: list[str] | None = None) -> QApplication:
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        app = existing
    else:
        set_identity()
        app = QApplication(argv if argv is not None else sys.argv)
    app.setWindowIcon(QIcon(str(resources.path("icons/ursus.svg"))))
    apply_style(app)
    return app


def apply_style(app: QApplication) -> None:
    app.setStyleSheet(resources.read_text("ursus.qss"))
