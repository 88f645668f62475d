"""Desktop test fixtures: offscreen Qt, an in-memory keyring, tmp dirs, isolated QSettings."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from desktop_helpers import MemoryKeyring
from PySide6.QtCore import QSettings

from ursus_desktop.app import set_identity

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # bench/ and tests/gateway helpers
    sys.path.append(_ROOT)


@pytest.fixture(autouse=True)
def desktop_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("data", "config", "logs", "qsettings"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("URSUS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("URSUS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("URSUS_LOG_DIR", str(tmp_path / "logs"))
    set_identity()
    QSettings.setPath(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings")
    )
    return tmp_path


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()  # the real one, for the secret_service test
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def controller(qtbot, desktop_env: Path):  # type: ignore[no-untyped-def]
    from ursus_desktop.controller import GatewayController

    c = GatewayController()
    yield c
    c.shutdown()


@pytest.fixture
def window(qtbot, controller):  # type: ignore[no-untyped-def]
    """A MainWindow over a sandbox-mode controller with its ledger open."""
    import dataclasses

    from gateway.config import Settings
    from ursus_desktop.main_window import MainWindow

    controller.settings = dataclasses.replace(Settings(), port=0)
    controller.sandbox = True
    w = MainWindow(controller, tray=False, first_run_prompt=False)
    with qtbot.waitSignal(controller.ledger_opened, timeout=5000):
        controller.open_ledger()
    yield w
    # Not qtbot.addWidget: pytest-qt would close the window while the gateway runs,
    # and closing then asks whether to stop it.
    controller.shutdown()
    w.close()
    w.deleteLater()
