"""GatewayController: start/stop in a worker, failures as messages, ledger notifications."""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path

import keyring
from desktop_helpers import TEST_SECRETS, NoKeyring, free_port

from gateway.config import ENV_SECRET_KEY, Settings, load_settings
from ursus_desktop.controller import GatewayController


def _sandbox_on_free_port(c: GatewayController, port: int = 0) -> None:
    c.settings = dataclasses.replace(Settings(), port=port)
    c.sandbox = True


def test_start_and_stop_in_sandbox(qtbot, controller: GatewayController) -> None:
    _sandbox_on_free_port(controller)
    with qtbot.waitSignal(controller.running_changed, timeout=10000) as started:
        controller.start()
    assert started.args == [True]
    assert controller.is_running
    port = controller.server.port
    assert port > 0
    assert controller.webhook_url() == f"http://127.0.0.1:{port}/webhook"
    assert controller.ledger is not None
    assert controller.uptime() is not None
    with qtbot.waitSignal(controller.running_changed, timeout=10000) as stopped:
        controller.stop()
    assert stopped.args == [False]
    assert not controller.is_running
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


def test_port_in_use_is_a_failed_signal_with_what_to_do(qtbot, controller) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        _sandbox_on_free_port(controller, taken.getsockname()[1])
        with qtbot.waitSignal(controller.failed, timeout=10000) as failed:
            controller.start()
    assert "already in use" in failed.args[0]
    assert not controller.is_running
    assert not controller.busy


def test_missing_settings_fail_before_any_thread_starts(qtbot, controller) -> None:
    controller.secrets_known = True  # an empty keyring
    with qtbot.waitSignal(controller.failed, timeout=2000) as failed:
        controller.start()
    assert ENV_SECRET_KEY in failed.args[0]
    assert "Settings" in failed.args[0]
    assert controller.server is None


def test_no_keyring_is_a_clear_message(qtbot, controller) -> None:
    keyring.set_keyring(NoKeyring())
    with qtbot.waitSignal(controller.failed, timeout=5000) as failed:
        controller.load_secrets()
    assert "No system keyring found" in failed.args[0]
    assert not controller.secrets_known


def test_save_puts_secrets_in_the_keyring_only(qtbot, controller, memory_keyring, desktop_env):
    settings = dataclasses.replace(Settings(), platform_name="Bear Goods", port=4343)
    with qtbot.waitSignal(controller.settings_saved, timeout=5000):
        controller.save(TEST_SECRETS, settings)
    assert memory_keyring.values[("ursus", ENV_SECRET_KEY)] == TEST_SECRETS.stripe_secret_key
    assert controller.secrets == TEST_SECRETS
    config_file = Path(desktop_env / "config" / "settings.json")
    assert load_settings(config_file).platform_name == "Bear Goods"
    text = config_file.read_text()
    for secret in (*TEST_SECRETS.values, TEST_SECRETS.connected_account_id):
        assert secret not in text
    fresh = GatewayController()
    try:
        with qtbot.waitSignal(fresh.secrets_loaded, timeout=5000):
            fresh.load_secrets()
        assert fresh.secrets == TEST_SECRETS
        assert fresh.settings.port == 4343
    finally:
        fresh.shutdown()


def test_a_write_from_another_thread_becomes_ledger_changed(qtbot, controller) -> None:
    with qtbot.waitSignal(controller.ledger_opened, timeout=5000):
        controller.open_ledger()
    ledger = controller.ledger

    def write() -> None:
        ledger.record_event("evt_test_thread", "charge.succeeded", 1, False, "ch_x", b"{}")

    with qtbot.waitSignal(controller.ledger_changed, timeout=1000):
        worker = threading.Thread(target=write)
        worker.start()
    worker.join()
    # The header figures are read off the GUI thread and announced by counts_changed.
    qtbot.waitUntil(
        lambda: controller.counts() is not None and controller.counts().pending_events == 1,
        timeout=3000,
    )


def test_test_connection_runs_in_a_worker_against_a_stripe_compatible_server(qtbot, controller):
    from gateway.sandbox import SandboxServer

    sandbox = SandboxServer.generated().start()
    try:
        with qtbot.waitSignal(controller.connection_tested, timeout=10000) as ok:
            controller.test_connection(
                sandbox.secret_key, sandbox.connected_account_id, sandbox.url
            )
        assert ok.args[0] is True
        assert sandbox.connected_account_id in ok.args[1]
        with qtbot.waitSignal(controller.connection_tested, timeout=10000) as bad:
            controller.test_connection("sk_test_wrongwrongwrong", "acct_nothere1", sandbox.url)
        assert bad.args[0] is False
        assert "sk_test_wrong" not in bad.args[1]
    finally:
        sandbox.stop()


def test_free_port_helper_gives_a_bindable_port() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert port > 0
