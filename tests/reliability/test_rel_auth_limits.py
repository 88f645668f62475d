"""Suite 7: API key, rate limit and bind address of a running gateway, over real HTTP.

- every missing or wrong ``X-API-Key`` is a 401 JSON error and exactly one
  ``Invalid API key attempt from <ip>`` line in error.log (fail2ban's format), and
  nothing reaches Stripe;
- the 11th create-payment-intent from one client within a minute is a 429 that
  does not reach Stripe either;
- ``GatewayServer`` and ``ursus-gateway serve`` listen on 127.0.0.1 unless a host is
  given: checked on the socket table, and by connecting through another local address.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
import requests
from reliability_support import (
    API_KEY,
    GatewayProcess,
    error_log,
    gateway_config,
    gateway_env,
)

from gateway.sandbox import SandboxServer
from gateway.service import GatewayServer

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (the point: binding it only when told to)
LOG_LINE_RE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ERROR gateway\.app Invalid API key attempt from (\S+)$",
    re.MULTILINE,
)


def order(i: int) -> dict[str, Any]:
    return {"amount": 1000 + i, "currency": "usd", "order_id": f"auth-{i}"}


def payment_intents(sandbox: SandboxServer) -> int:
    with sandbox.state.lock:
        return len(sandbox.state.payment_intents)


def test_missing_or_wrong_api_key_is_401_and_one_log_line_each(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path
) -> None:
    server = GatewayServer(gateway_config(sandbox, tmp_path))
    started.append(server)
    server.start()
    url = server.url + "/create-payment-intent"
    bad_headers: list[tuple[str, dict[str, str]]] = [
        ("missing", {}),
        ("empty", {"X-API-Key": ""}),
        ("wrong", {"X-API-Key": "not-the-key-0123456789"}),
        ("upper case", {"X-API-Key": API_KEY.upper()}),
        ("prefix", {"X-API-Key": API_KEY[:-1]}),
        ("longer", {"X-API-Key": API_KEY + "0"}),
        ("the Stripe secret key", {"X-API-Key": sandbox.secret_key}),
        ("the webhook secret", {"X-API-Key": sandbox.webhook_secret}),
        ("as a bearer token", {"Authorization": f"Bearer {API_KEY}"}),
        ("non-ASCII", {"X-API-Key": "cl\u00e9-0123456789abcdef"}),
        ("1 KB", {"X-API-Key": "k" * 1024}),
    ]
    with requests.Session() as session:
        # Each attempt from its own client address (through the trusted tunnel, as
        # fail2ban would see them): the limit of 10/minute per client is not reached.
        for i, (name, headers) in enumerate(bad_headers):
            client = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            resp = session.post(url, json=order(0), headers={**headers, **client}, timeout=10)
            assert resp.status_code == 401, name
            assert resp.json()["error"]["code"] == "invalid_api_key", name
        # The key in the query string is not a key either (straight from 127.0.0.1).
        resp = session.post(url, params={"api_key": API_KEY}, json=order(0), timeout=10)
        assert resp.status_code == 401
        ok = session.post(url, json=order(1), headers={"X-API-Key": API_KEY}, timeout=10)
        assert ok.status_code == 200
        # Guessing keys from one address is throttled like any other request.
        guesses = [
            session.post(url, json=order(0), headers={"X-API-Key": f"guess-{i:020d}"}, timeout=10)
            for i in range(10)
        ]
    guess_statuses = [r.status_code for r in guesses]
    assert guess_statuses == [401] * 8 + [429] * 2  # 2 requests above already counted
    attempts = len(bad_headers) + 1 + 8
    ips = LOG_LINE_RE.findall(error_log(tmp_path / "logs"))
    assert ips == [f"203.0.113.{i + 1}" for i in range(len(bad_headers))] + ["127.0.0.1"] * 9
    assert payment_intents(sandbox) == 1  # only the valid request reached Stripe
    print(
        f"\nRESULT auth: bad_key_attempts={attempts} answered_401={attempts} "
        f"log_lines={len(ips)} guesses_from_one_ip={guess_statuses}"
    )


def test_the_eleventh_payment_intent_in_a_minute_is_429(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path
) -> None:
    server = GatewayServer(gateway_config(sandbox, tmp_path))
    started.append(server)
    server.start()
    url = server.url + "/create-payment-intent"
    statuses = []
    with requests.Session() as session:
        session.headers["X-API-Key"] = API_KEY
        for i in range(12):
            resp = session.post(url, json=order(i), timeout=10)
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                assert resp.json()["error"]["code"] == "rate_limited"
        # Another client (through the trusted tunnel) has its own allowance.
        other = session.post(
            url, json=order(99), headers={"X-Forwarded-For": "198.51.100.7"}, timeout=10
        )
    assert statuses == [200] * 10 + [429, 429]
    assert other.status_code == 200
    assert payment_intents(sandbox) == 11  # the refused ones never reached Stripe
    print(f"\nRESULT rate_limit: statuses={statuses} other_client={other.status_code}")


# -- bind address ------------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, port_hex = fields[1].split(":")
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                if len(addr) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    found.add(addr)
    return found


def other_local_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks a route
        addr = str(probe.getsockname()[0])
    except OSError:
        return None
    finally:
        probe.close()
    return None if addr.startswith("127.") else addr


def refused(addr: str, port: int) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=2):
            return False
    except OSError:
        return True


def test_gateway_server_binds_loopback_unless_told(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path
) -> None:
    server = GatewayServer(gateway_config(sandbox, tmp_path))
    started.append(server)
    server.start()
    assert server.url.startswith("http://127.0.0.1:")
    assert listening_addresses(server.port) == {"127.0.0.1"}
    other = other_local_address()
    if other is not None:
        assert refused(other, server.port)

    told = GatewayServer(gateway_config(sandbox, tmp_path / "all", host=ALL_INTERFACES))
    started.append(told)
    told.start()
    assert listening_addresses(told.port) == {ALL_INTERFACES}
    if other is not None:
        assert not refused(other, told.port)


def test_headless_serve_binds_loopback_by_default(sandbox: SandboxServer, tmp_path: Path) -> None:
    gw = GatewayProcess(
        ["--data-dir", str(tmp_path / "data"), "--port", "0"],
        gateway_env(sandbox, tmp_path),
        tmp_path,
    )
    try:
        url = gw.start()
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}"
        assert listening_addresses(port) == {"127.0.0.1"}
        other = other_local_address()
        if other is not None:
            assert refused(other, port)
        assert requests.get(url + "/health", timeout=10).status_code == 200
        assert gw.terminate() == 0
    finally:
        gw.kill()


@pytest.mark.parametrize("host", [ALL_INTERFACES])
def test_headless_serve_binds_what_it_is_told(
    sandbox: SandboxServer, tmp_path: Path, host: str
) -> None:
    gw = GatewayProcess(
        ["--data-dir", str(tmp_path / "data"), "--port", "0", "--host", host],
        gateway_env(sandbox, tmp_path),
        tmp_path,
    )
    try:
        url = gw.start()
        assert listening_addresses(int(url.rsplit(":", 1)[1])) == {host}
    finally:
        gw.kill()
