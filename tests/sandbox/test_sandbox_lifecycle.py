"""Start/stop, the CLI subcommand, simulate_payment, and the committed spec data."""

from __future__ import annotations

import argparse
import io
import json
import threading
from pathlib import Path

import pytest
import requests
from flask import Flask, jsonify, request

from gateway.sandbox import SandboxServer
from gateway.sandbox import cli as sandbox_cli
from gateway.sandbox.simulate import SimulatedSale, SimulationError, simulate_payment
from gateway.wsgi_server import PortInUseError, WsgiServer

REPO = Path(__file__).resolve().parents[2]


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def test_clean_stop_leaves_no_threads_and_frees_the_port(receiver) -> None:
    before = _threads()
    sb = SandboxServer.generated(retry_delays=(0.01,))
    sb.start()
    sb.webhook_url = receiver.url
    client = sb.stripe_client()
    client.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    # A keep-alive connection is open while we stop.
    session = requests.Session()
    session.get(
        f"{sb.url}/v1/balance", headers={"Authorization": f"Bearer {sb.secret_key}"}, timeout=5
    )
    assert sb.wait_idle(5)
    port = sb.port
    sb.stop()
    session.close()
    assert not sb.is_running
    assert _threads() - before == set()
    again = SandboxServer.generated(port=port)  # the port is free again
    again.start()
    again.stop()


def test_port_in_use_is_reported() -> None:
    with SandboxServer.generated() as first:
        clash = SandboxServer.generated(port=first.port)
        with pytest.raises(PortInUseError):
            clash.start()
        assert not clash.webhooks._thread


def test_generated_secrets_look_fake_and_differ() -> None:
    a, b = SandboxServer.generated(), SandboxServer.generated()
    assert a.secret_key.startswith("sk_test_sandbox_")
    assert a.webhook_secret.startswith("whsec_test_sandbox_")
    assert a.connected_account_id.startswith("acct_sandbox")
    assert a.secret_key != b.secret_key


def test_cli_runs_until_stopped() -> None:
    parser = argparse.ArgumentParser()
    sandbox_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "sandbox",
            "--port",
            "0",
            "--secret-key",
            "sk_test_cli_1",
            "--account",
            "acct_cli0001",
            "--webhook-secret",
            "whsec_cli",
        ]
    )
    out, stop, result = io.StringIO(), threading.Event(), []
    thread = threading.Thread(target=lambda: result.append(args.func(args, stop=stop, out=out)))
    thread.start()
    try:
        deadline = threading.Event()
        while "Press Ctrl-C" not in out.getvalue() and not deadline.wait(0.01):
            pass
        url = out.getvalue().split("listening on ", 1)[1].split()[0]
        resp = requests.get(
            f"{url}/v1/accounts/acct_cli0001",
            timeout=5,
            headers={"Authorization": "Bearer sk_test_cli_1"},
        )
        assert resp.json()["id"] == "acct_cli0001"
        assert "STRIPE_WEBHOOK_SECRET=whsec_cli" in out.getvalue()
    finally:
        stop.set()
        thread.join(5)
    assert result == [0] and "stopped" in out.getvalue()


def test_cli_refuses_live_keys(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    sandbox_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sandbox", "--secret-key", "sk_live_x"])
    assert args.func(args) == 2
    assert "sk_test_" in capsys.readouterr().err


@pytest.fixture
def stub_gateway(sandbox: SandboxServer):  # type: ignore[no-untyped-def]
    """A tiny stand-in for URSUS's /create-payment-intent."""
    app = Flask("stub-gateway")
    client = sandbox.stripe_client()

    @app.post("/create-payment-intent")
    def create():  # type: ignore[no-untyped-def]
        if request.headers.get("X-API-Key") != "ursus-key":
            return jsonify(error="unauthorized"), 401
        body = request.get_json()
        pi = client.v1.payment_intents.create(
            params={
                "amount": body["amount"],
                "currency": body["currency"],
                "metadata": {"order_id": body["order_id"]},
                "transfer_group": body["order_id"],
                "automatic_payment_methods": {"enabled": True},
            }
        )
        return jsonify(client_secret=pi.client_secret, payment_intent_id=pi.id)

    server = WsgiServer(app, "127.0.0.1", 0, threads=2, name="stub-gateway")
    server.start()
    yield server.url
    server.stop()


def test_simulate_payment(sandbox: SandboxServer, stub_gateway: str) -> None:
    sale = simulate_payment(
        stub_gateway, "ursus-key", sandbox, sandbox.secret_key, 10000, order_id="order-sim"
    )
    assert isinstance(sale, SimulatedSale) and sale.captured
    charge = sandbox.state.charges[sale.charge_id]
    assert charge["metadata"]["order_id"] == "order-sim" and charge["captured"]
    assert charge["payment_intent"] == sale.payment_intent_id

    held = simulate_payment(
        stub_gateway, "ursus-key", sandbox.url, sandbox.secret_key, 5000, capture=False
    )
    assert not held.captured and held.order_id.startswith("order_")
    assert sandbox.state.charges[held.charge_id]["captured"] is False
    with pytest.raises(SimulationError, match="401"):
        simulate_payment(stub_gateway, "wrong", sandbox, sandbox.secret_key, 100)


def test_sandbox_params_match_the_spec_extract() -> None:
    ours = json.loads((REPO / "gateway/sandbox/fixtures/params.json").read_text())
    spec = json.loads((REPO / "tests/data/stripe_spec_extract.json").read_text())
    assert ours == spec
    assert "source_transaction" in spec["paths"]["/v1/transfers"]["POST"]


def test_gateway_sandbox_does_not_import_qt() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gateway.sandbox, gateway.sandbox.cli, gateway.sandbox.simulate; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('PySide6', 'shiboken6', 'ursus_desktop')]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
