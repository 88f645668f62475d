"""GET /health and the HealthProbe behind its stripe_connected field."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import pytest
from fakes import FakeLedger, FakeStripe, make_config

from gateway.app import RateLimits, create_app
from gateway.errors import StorageError
from gateway.health import HealthProbe


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_health_reports_mode_stripe_and_backlog() -> None:
    ledger = FakeLedger()
    ledger.record_event("evt_1", "charge.succeeded", 1, False, "ch_1", b"{}")
    probe = HealthProbe(FakeStripe(connected=True))
    probe.refresh()
    client = create_app(make_config(), ledger, FakeStripe(), probe).test_client()
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "healthy",
        "mode": "test",
        "stripe_connected": True,
        "pending_events": 1,
        "storage": "ok",
    }


@pytest.mark.parametrize(
    ("key", "sandbox", "mode"),
    [
        ("sk_test_abcdefgh12345678", False, "test"),
        ("rk_live_fake_abcdefgh", False, "live"),
        ("sk_test_abcdefgh12345678", True, "sandbox"),
        ("", False, None),
    ],
)
def test_health_mode(key: str, sandbox: bool, mode: str | None) -> None:
    config = make_config()
    secrets = dataclasses.replace(config.secrets, stripe_secret_key=key)
    config = dataclasses.replace(config, secrets=secrets, sandbox=sandbox)
    body = create_app(config, FakeLedger(), FakeStripe()).test_client().get("/health").get_json()
    assert body["mode"] == mode
    assert body["stripe_connected"] is None  # no probe given


def test_health_is_503_when_the_ledger_is_unavailable() -> None:
    ledger = FakeLedger()
    ledger.counts_fail_with = StorageError("disk I/O error")
    response = create_app(make_config(), ledger, FakeStripe()).test_client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert (body["status"], body["storage"], body["pending_events"]) == (
        "unhealthy",
        "unavailable",
        None,
    )


def test_health_is_rate_limited_per_client() -> None:
    app = create_app(
        make_config(), FakeLedger(), FakeStripe(), rate_limits=RateLimits(health="3/minute")
    )
    client = app.test_client()
    codes = [client.get("/health").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    other = client.get("/health", headers={"CF-Connecting-IP": "198.51.100.9"})
    assert other.status_code == 200


def test_health_never_waits_for_a_hanging_stripe() -> None:
    release = threading.Event()
    calls: list[float] = []

    def hanging_ping() -> bool:
        calls.append(time.monotonic())
        release.wait(10)
        return True

    probe = HealthProbe(hanging_ping, interval=60)
    probe.start()
    try:
        wait_until(lambda: bool(calls))
        client = create_app(make_config(), FakeLedger(), FakeStripe(), probe).test_client()
        started = time.monotonic()
        body = client.get("/health").get_json()
        assert time.monotonic() - started < 1.0
        assert body["stripe_connected"] is None  # first check still in flight
        release.set()
        wait_until(lambda: probe.stripe_connected is True)
        assert client.get("/health").get_json()["stripe_connected"] is True
    finally:
        release.set()
        probe.stop()
    assert not probe.is_running


def test_probe_refreshes_on_its_interval_and_stops_cleanly() -> None:
    stripe = FakeStripe(connected=False)
    probe = HealthProbe(stripe, interval=0.01)
    assert probe.stripe_connected is None and probe.checked_at is None
    probe.start()
    probe.start()  # idempotent
    try:
        wait_until(lambda: stripe.pings >= 1)
        assert probe.stripe_connected is False
        stripe.connected = True
        wait_until(lambda: probe.stripe_connected is True)
        assert probe.checked_at is not None
    finally:
        probe.stop()
    assert not probe.is_running
    pings = stripe.pings
    time.sleep(0.05)  # a stopped probe pings no more (a negative check needs a pause)
    assert stripe.pings == pings
    assert not any(t.name == "stripe-health" for t in threading.enumerate())


def test_a_raising_ping_counts_as_unreachable() -> None:
    def broken() -> bool:
        raise ConnectionError("no route to host")

    probe = HealthProbe(broken, clock=lambda: 1234.0)
    assert probe.refresh() is False
    assert (probe.stripe_connected, probe.checked_at) == (False, 1234.0)
