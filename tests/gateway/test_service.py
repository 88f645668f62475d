"""GatewayServer: start/stop as one unit, failures leave nothing running."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from gateway.config import GatewayConfig, Secrets, Settings
from gateway.errors import StorageError
from gateway.models import TransferStatus
from gateway.service import ConfigError, GatewayServer, PortInUseError


def sandbox_config(tmp_path: Path, **settings: object) -> GatewayConfig:
    return GatewayConfig(
        secrets=Secrets(),
        settings=Settings(**{"port": 0, **settings}),  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
    ).for_sandbox()


def settle(before: set[threading.Thread], timeout: float = 5.0) -> set[threading.Thread]:
    """Threads started since ``before`` that are still alive after a grace period."""
    deadline = time.monotonic() + timeout
    while True:
        extra = {t for t in threading.enumerate() if t not in before and t.is_alive()}
        # flask-limiter's memory storage may run a short-lived expiry Timer.
        extra = {t for t in extra if not isinstance(t, threading.Timer)}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.02)


def test_sandbox_gateway_sells_and_stops_without_leftovers(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    server = GatewayServer(sandbox_config(tmp_path))
    server.start()
    try:
        assert server.is_running and server.port > 0
        assert server.config.mode == "sandbox"
        assert server.config.data_dir == tmp_path / "data" / "sandbox"
        charge_id = server.simulate_payment(10000, "usd", "svc-1")
        assert server.wait_for_transfer(charge_id) == TransferStatus.CREATED
        view = server.ledger.get_charge(charge_id)
        assert view is not None and view.transfer_amount == 9583
        port = server.port
    finally:
        server.stop()
    assert not server.is_running and server.port == 0
    assert settle(before) == set()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    # The ledger survives the stop and a restart sees the sale.
    server.start()
    try:
        assert server.ledger.counts().charges == 1
    finally:
        server.stop()


def test_port_in_use_leaves_nothing_running(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = set(threading.enumerate())
        server = GatewayServer(sandbox_config(tmp_path, port=port))
        with pytest.raises(PortInUseError):
            server.start()
    assert not server.is_running
    assert server.sandbox is None  # the simulator it had started was stopped again
    assert settle(before) == set()


def test_missing_secrets_are_listed(tmp_path: Path) -> None:
    config = GatewayConfig(secrets=Secrets(), settings=Settings(port=0), data_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        GatewayServer(config).start()
    message = str(info.value)
    for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "CONNECTED_ACCOUNT_ID"):
        assert name in message


def test_unusable_data_dir_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = GatewayConfig(
        secrets=Secrets(),
        settings=Settings(port=0),
        data_dir=blocker / "data",
        log_dir=tmp_path / "logs",
    ).for_sandbox()
    server = GatewayServer(config)
    with pytest.raises(StorageError) as info:
        server.start()
    assert "data folder" in str(info.value)
    assert not server.is_running and server.sandbox is None


def test_unwritable_log_folder_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = GatewayConfig(
        secrets=Secrets(),
        settings=Settings(port=0),
        data_dir=tmp_path / "data",
        log_dir=blocker / "logs",
    ).for_sandbox()
    server = GatewayServer(config)
    with pytest.raises(StorageError) as info:
        server.start()
    assert f"log folder {blocker / 'logs'}" in str(info.value)
    assert not server.is_running and server.sandbox is None
