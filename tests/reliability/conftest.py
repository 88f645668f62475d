"""Reliability suites: `--run-slow` runs the long variants; fixtures for real loopback servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger import Ledger
from gateway.sandbox import SandboxServer
from gateway.service import GatewayServer

RUN_SLOW_ENV = "URSUS_RUN_SLOW"


def run_slow(config: pytest.Config) -> bool:
    # --run-slow is registered by tests/conftest.py; URSUS_RUN_SLOW=1 works too.
    return bool(config.getoption("--run-slow")) or os.environ.get(RUN_SLOW_ENV) == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if run_slow(config):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow (or URSUS_RUN_SLOW=1)")
    here = Path(__file__).parent
    for item in items:
        if "slow" in item.keywords and here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture
def slow_mode(request: pytest.FixtureRequest) -> bool:
    """True when the long variants run (more fuzz examples, random instead of fixed seeds)."""
    return run_slow(request.config)


@pytest.fixture
def fast_processor_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The processor's retry backoff (2 s doubling to 10 min) cut to 20 ms doubling to 0.3 s.

    There is no setting or constructor argument for it (RETRY_BASE/RETRY_CAP are
    module constants read at call time), so the test patches the constants. The
    idle poll (1 s) that picks deferred work up again is a Processor argument that
    GatewayServer does not expose: GatewayServer imports Processor at start, so a
    subclass with a 50 ms poll is patched in.
    """
    import gateway.processor as processor

    monkeypatch.setattr(processor, "RETRY_BASE", 0.02)
    monkeypatch.setattr(processor, "RETRY_CAP", 0.3)

    class QuickPollProcessor(processor.Processor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("poll_interval", 0.05)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(processor, "Processor", QuickPollProcessor)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """Stripe: the offline sandbox on a loopback port; it delivers no webhooks itself."""
    with SandboxServer.generated(retry_delays=(0.01,), seed=20261126, threads=8) as sb:
        yield sb


@pytest.fixture
def opened() -> Iterator[list[Ledger]]:
    """Ledgers opened by a test (given to a GatewayServer, which does not close them)."""
    ledgers: list[Ledger] = []
    try:
        yield ledgers
    finally:
        for ledger in ledgers:
            ledger.close()


@pytest.fixture
def started(opened: list[Ledger]) -> Iterator[list[GatewayServer]]:
    """Gateways started by a test, stopped whatever happens (before their ledgers close)."""
    servers: list[GatewayServer] = []
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()
