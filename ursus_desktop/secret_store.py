"""The four secrets in the OS keyring (service ``ursus``), never in a file (DESIGN §5).

Every call may block (D-Bus, an unlock prompt): callers run it off the GUI thread.
"""

from __future__ import annotations

import contextlib

import keyring
import keyring.errors

from gateway.config import KEYRING_SERVICE, SECRET_NAMES, Secrets

NO_KEYRING_MESSAGE = (
    "No system keyring found: install/unlock GNOME Keyring or KWallet (or your desktop's "
    "Secret Service) and try again. URSUS never stores secrets in a plain file; to run "
    "without a keyring use the headless gateway with environment variables "
    "(ursus-gateway serve)."
)


class SecretStoreError(Exception):
    """The keyring is missing, locked or refused; the message says what to do."""


def _friendly(exc: Exception) -> SecretStoreError:
    # keyring's messages can name the backend but never a secret value; ours stays generic.
    if isinstance(exc, keyring.errors.NoKeyringError):
        return SecretStoreError(NO_KEYRING_MESSAGE)
    if isinstance(exc, keyring.errors.KeyringLocked):
        return SecretStoreError("The system keyring is locked: unlock it and try again.")
    return SecretStoreError(
        f"The system keyring refused the request ({type(exc).__name__}). "
        "Unlock GNOME Keyring/KWallet and try again."
    )


class SecretStore:
    """Reads and writes the secrets under the env-var names as keyring usernames."""

    def __init__(self, service: str = KEYRING_SERVICE) -> None:
        self.service = service

    def load(self) -> Secrets:
        """All secrets; missing ones are empty. Raises SecretStoreError."""
        values: dict[str, str | None] = {}
        try:
            for name in SECRET_NAMES:
                values[name] = keyring.get_password(self.service, name)
        except keyring.errors.KeyringError as exc:
            raise _friendly(exc) from None
        return Secrets.from_mapping(values)

    def save(self, secrets: Secrets) -> None:
        """Store every secret; an empty one is deleted. Raises SecretStoreError."""
        try:
            for name, value in secrets.to_mapping().items():
                if value:
                    keyring.set_password(self.service, name, value)
                else:
                    # Nothing stored under that name: already gone.
                    with contextlib.suppress(keyring.errors.PasswordDeleteError):
                        keyring.delete_password(self.service, name)
        except keyring.errors.KeyringError as exc:
            raise _friendly(exc) from None

    def is_empty(self) -> bool:
        """True when no secret at all is stored (first run). Raises SecretStoreError."""
        return not any(self.load().to_mapping().values())
