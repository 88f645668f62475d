"""`ursus-gateway`: every subcommand as a user runs it."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from gateway.cli import main

SECRET_ENV = ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "CONNECTED_ACCOUNT_ID", "URSUS_API_KEY")
GOOD_ENV = {
    "STRIPE_SECRET_KEY": "sk_test_clitest0123456789",
    "STRIPE_WEBHOOK_SECRET": "whsec_test0123456789abcdef",
    "CONNECTED_ACCOUNT_ID": "acct_test0123456",
    "URSUS_API_KEY": "cli-test-api-key-0123456789",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (*SECRET_ENV, "URSUS_STRIPE_API_BASE", "URSUS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("URSUS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("URSUS_LOG_DIR", str(tmp_path / "logs"))


def test_check_config_names_every_missing_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    for name in SECRET_ENV:
        assert f"{name}: missing" in err


def test_check_config_says_what_is_malformed_and_never_echoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in GOOD_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "pk_test_publishablenotsecret")
    monkeypatch.setenv("CONNECTED_ACCOUNT_ID", "acc_wrong")
    assert main(["check-config", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "STRIPE_SECRET_KEY: malformed" in err
    assert "CONNECTED_ACCOUNT_ID: malformed" in err
    assert "pk_test_publishablenotsecret" not in err


def test_check_config_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in GOOD_ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check-config", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Configuration OK (test mode)" in out
    assert GOOD_ENV["STRIPE_SECRET_KEY"] not in out


def test_bad_settings_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "settings.json"
    config.write_text('{"port": 99999}')
    assert main(["check-config", "--config", str(config), "--data-dir", str(tmp_path)]) == 2
    assert "port" in capsys.readouterr().err


def test_simulate_payment_then_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    args = ["--data-dir", str(data)]
    assert main(["simulate-payment", *args, "--amount", "10000", "--order-id", "A-1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"stripe fee 320 \(actual\), commission 97, transfer 9583 -> created", out)

    # The sandbox keeps its own ledger: the real one stays empty.
    assert main(["export", *args, "--out", str(tmp_path / "real.csv")]) == 0
    assert len((tmp_path / "real.csv").read_text().splitlines()) == 1  # header only

    sandbox_args = ["--data-dir", str(data), "--sandbox"]
    out_csv = tmp_path / "sales.csv"
    assert main(["export", *sandbox_args, "--out", str(out_csv), "--since", "2000-01-01"]) == 0
    [row] = list(csv.DictReader(io.StringIO(out_csv.read_text(encoding="utf-8"), newline="")))
    assert row["order_id"] == "A-1"
    assert (row["gross"], row["stripe_fee"], row["commission"], row["transfer_amount"]) == (
        "100.00",
        "3.20",
        "0.97",
        "95.83",
    )
    assert row["transfer_status"] == "created"

    # --until before the sale selects nothing.
    assert main(["export", *sandbox_args, "--out", str(out_csv), "--until", "2000-01-01"]) == 0
    assert len(out_csv.read_text().splitlines()) == 1


def test_export_rejects_a_bad_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "--data-dir", str(tmp_path), "--out", "x.csv", "--since", "yesterday"])
    assert info.value.code == 2
    assert "not a date" in capsys.readouterr().err


def test_retry_transfer_of_an_unknown_charge_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in GOOD_ENV.items():
        monkeypatch.setenv(name, value)
    # Nothing listens there: no request may be needed to refuse an unknown charge.
    monkeypatch.setenv("URSUS_STRIPE_API_BASE", "http://127.0.0.1:9")
    code = main(["retry-transfer", "--data-dir", str(tmp_path), "ch_doesnotexist"])
    assert code == 1
    assert "ch_doesnotexist" in capsys.readouterr().out


def test_retry_transfer_without_secrets_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retry-transfer", "--data-dir", str(tmp_path), "ch_x"]) == 2
    assert "STRIPE_SECRET_KEY: missing" in capsys.readouterr().err


# -- serve, as a real process -------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[callable]:
    procs: list[subprocess.Popen[str]] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        full_env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        full_env.update(env or {})
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--data-dir", str(tmp_path), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _read_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"listening on (http://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"no URL printed; stderr: {proc.stderr.read() if proc.stderr else ''}")


def test_serve_sandbox_binds_loopback_and_stops_on_sigterm(serve) -> None:  # type: ignore[no-untyped-def]
    proc = serve("--sandbox", "--port", "0")
    url = _read_url(proc)
    assert url.startswith("http://127.0.0.1:")
    health = requests.get(f"{url}/health", timeout=5).json()
    assert health["status"] == "healthy" and health["mode"] == "sandbox"
    assert requests.get(f"{url}/", timeout=5).status_code == 404

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Stopped." in out
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=2)


def test_serve_without_secrets_exits_2_with_the_list(serve) -> None:  # type: ignore[no-untyped-def]
    proc = serve("--port", "0")
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "STRIPE_SECRET_KEY: missing" in err
    assert "check-config" in err


def test_serve_on_a_taken_port_says_so(serve) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve("--port", str(port), env=GOOD_ENV)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"Port {port}" in err and "already in use" in err
    assert "Traceback" not in err
