"""Desktop test fixtures: offscreen Qt, an in-memory keyring, tmp dirs, isolated QSettings."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import keyring.errors
import pytest
from PySide6.QtCore import QSettings

from gateway.config import Secrets
from ursus_desktop.app import set_identity

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # bench/ and tests/gateway helpers
    sys.path.append(_ROOT)

TEST_SECRETS = Secrets(
    stripe_secret_key="sk_test_" + "a1B2c3D4e5F6g7H8",
    webhook_secrets=("whsec_test0123456789abcdefABCDEF",),
    connected_account_id="acct_test1234567",
    api_keys=("api-key-for-tests-0123456789",),
)


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that forgets everything when the test ends."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.values.pop((service, username), None) is None:
            raise keyring.errors.PasswordDeleteError(username)


class NoKeyring(keyring.backend.KeyringBackend):
    """What keyring picks without a D-Bus session."""

    priority = 0  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.NoKeyringError("No recommended backend was available.")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.NoKeyringError("No recommended backend was available.")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.NoKeyringError("No recommended backend was available.")


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
