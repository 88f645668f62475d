"""Shared helpers of the desktop tests (importable: pytest puts this folder on sys.path)."""

from __future__ import annotations

import keyring.backend
import keyring.errors

from gateway.config import Secrets

TEST_SECRETS = Secrets(
    stripe_secret_key="sk_test_" + "a1B2c3D4e5F6g7H8",
    webhook_secrets=("whsec_test_fake_0123456789",),
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
