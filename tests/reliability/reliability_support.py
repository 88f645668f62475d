"""Shared machinery of the reliability suites: sales in the sandbox, signed deliveries, checks.

Everything here talks to real servers over loopback: a ``SandboxServer`` plays
Stripe, a ``GatewayServer`` (or the ``ursus-gateway serve`` subprocess) is the
system under test. Helpers poll with a deadline instead of sleeping.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
import stripe

from gateway.config import GatewayConfig, Secrets, Settings
from gateway.sandbox import SandboxServer

T = TypeVar("T")

API_KEY = "ursus-reliability-api-key-0123456789"
CHARGE_EVENT_TYPES = ("charge.succeeded", "charge.updated")
GATEWAY_BIN = Path(sys.executable).with_name("ursus-gateway")


# -- waiting -----------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(interval)


# -- configuration -------------------------------------------------------------------


def gateway_config(
    sandbox: SandboxServer, tmp: Path, *, api_key: str = API_KEY, **settings: Any
) -> GatewayConfig:
    """A test-mode gateway whose Stripe is ``sandbox``, port 0 on loopback, files under tmp."""
    secrets = Secrets(
        stripe_secret_key=sandbox.secret_key,
        webhook_secrets=(sandbox.webhook_secret,),
        connected_account_id=sandbox.connected_account_id,
        api_keys=(api_key,),
    )
    settings.setdefault("port", 0)
    return GatewayConfig(
        secrets=secrets,
        settings=Settings(stripe_api_base=sandbox.url, **settings),
        data_dir=tmp / "data",
        log_dir=tmp / "logs",
    )


def gateway_env(sandbox: SandboxServer, tmp: Path, *, api_key: str = API_KEY) -> dict[str, str]:
    """Environment of a headless ``ursus-gateway`` talking to ``sandbox`` (DESIGN §5)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("URSUS_", "STRIPE_"))}
    env.update(
        STRIPE_SECRET_KEY=sandbox.secret_key,
        STRIPE_WEBHOOK_SECRET=sandbox.webhook_secret,
        CONNECTED_ACCOUNT_ID=sandbox.connected_account_id,
        URSUS_API_KEY=api_key,
        URSUS_STRIPE_API_BASE=sandbox.url,
        URSUS_CONFIG_DIR=str(tmp / "config"),
        PYTHONUNBUFFERED="1",
    )
    return env


# -- sales in the sandbox ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sale:
    """One paid, captured charge in the sandbox and the charge events Stripe would send."""

    charge_id: str
    amount: int
    currency: str
    fee: int  # the balance transaction's fee
    events: tuple[tuple[str, bytes], ...]  # (event id, raw body) of CHARGE_EVENT_TYPES


def make_sales(
    sandbox: SandboxServer, amounts: Sequence[tuple[int, str]], prefix: str = "order"
) -> list[Sale]:
    """Pay one PaymentIntent per (amount, currency) straight in the sandbox's state.

    The sandbox's HTTP API is tested elsewhere; here only the resulting charges and
    their events matter, and creating 2,000 of them over HTTP would cost more than
    the suites themselves.
    """
    state = sandbox.state
    first_event = len(state.events)
    charges: list[tuple[str, int, str]] = []
    for i, (amount, currency) in enumerate(amounts):
        order = f"{prefix}-{i:05d}"
        pi = state.create_payment_intent(
            {
                "amount": str(amount),
                "currency": currency,
                "metadata": {"order_id": order},
                "transfer_group": order,
                "confirm": "true",
                "payment_method": "pm_card_visa",
            }
        )
        charges.append((str(pi["latest_charge"]), amount, currency))
    with state.lock:
        emitted = list(state.events[first_event:])
    by_charge: dict[str, list[tuple[str, bytes]]] = {}
    for event in emitted:
        if event["type"] in CHARGE_EVENT_TYPES:
            raw = json.dumps(event, indent=2).encode("utf-8")
            by_charge.setdefault(event["data"]["object"]["id"], []).append((event["id"], raw))
    sales = []
    for charge_id, amount, currency in charges:
        charge = state.charge(charge_id)
        fee = state.balance_transaction(charge["balance_transaction"])["fee"]
        sales.append(Sale(charge_id, amount, currency, fee, tuple(by_charge[charge_id])))
    return sales


def varied_amounts(n: int, seed: int) -> list[tuple[int, str]]:
    """Amounts across the whole range (50 .. 99,999,999 minor units) and three currencies."""
    import random

    rng = random.Random(seed)
    edges = [(50, "usd"), (51, "usd"), (99_999_999, "usd"), (10_000, "usd"), (50, "eur")]
    out = edges[:n]
    while len(out) < n:
        currency = rng.choice(("usd", "usd", "eur", "jpy"))
        amount = int(10 ** rng.uniform(1.7, 7.99))
        out.append((max(50, amount), currency))
    return out


# -- signed deliveries ---------------------------------------------------------------------


def sign(raw: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header Stripe would send for ``raw``."""
    return stripe.WebhookSignature.generate_signature_header(
        raw.decode("utf-8"), secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )


@dataclass(slots=True)
class Delivery:
    """One POST /webhook and what came back (status None: no answer)."""

    event_id: str
    raw: bytes
    status: int | None = None
    body: bytes = b""
    error: str = ""


class Deliverer:
    """POSTs signed events concurrently, one keep-alive session per worker thread."""

    def __init__(self, url: str, secret: str, concurrency: int = 32, timeout: float = 30.0) -> None:
        self.url = url
        self.secret = secret
        self.concurrency = concurrency
        self.timeout = timeout
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def post(self, delivery: Delivery) -> Delivery:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(delivery.raw, self.secret),
        }
        try:
            resp = self._session().post(
                self.url, data=delivery.raw, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            delivery.error = type(exc).__name__
            return delivery
        delivery.status = resp.status_code
        delivery.body = resp.content
        return delivery

    def deliver_all(
        self, items: Iterable[tuple[str, bytes]], on_done: Callable[[Delivery], None] | None = None
    ) -> list[Delivery]:
        deliveries = [Delivery(event_id, raw) for event_id, raw in items]

        def run(d: Delivery) -> Delivery:
            self.post(d)
            if on_done is not None:
                on_done(d)
            return d

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="deliver") as pool:
            return list(pool.map(run, deliveries))

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


# -- reading the ledger as the owner would ----------------------------------------------------


def db_rows(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of a query on the ledger file, through a separate read-only connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def event_statuses(db: Path) -> dict[str, str]:
    return dict(db_rows(db, "SELECT event_id, status FROM events"))


@dataclass(slots=True)
class Reconciliation:
    """The ledger against the sandbox for a set of sales: what was lost, paid twice, mis-summed."""

    sales: int
    transfers_at_stripe: int
    ledger_created: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    gross_total: dict[str, int] = field(default_factory=dict)
    split_total: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.duplicated
            and not self.mismatched
            and self.transfers_at_stripe == self.sales == self.ledger_created
            and self.gross_total == self.split_total
        )


def reconcile(db: Path, sandbox: SandboxServer, sales: Sequence[Sale]) -> Reconciliation:
    """Compare every sale with its ledger row and its transfers at the sandbox."""
    rows = {
        r[0]: r
        for r in db_rows(
            db,
            "SELECT c.charge_id, c.amount, c.currency, c.stripe_fee, c.commission,"
            " c.transfer_amount, c.fee_source, t.status, t.transfer_id, t.amount"
            " FROM charges c LEFT JOIN transfers t ON t.charge_id = c.charge_id",
        )
    }
    with sandbox.state.lock:
        at_stripe = [dict(t) for t in sandbox.state.transfers.values()]
    by_source = Counter(t["source_transaction"] for t in at_stripe)
    stripe_by_id = {t["id"]: t for t in at_stripe}
    ids = {s.charge_id for s in sales}
    rec = Reconciliation(
        sales=len(sales),
        transfers_at_stripe=sum(by_source[c] for c in ids),
        ledger_created=sum(1 for c in ids if c in rows and rows[c][7] == "created"),
    )
    for sale in sales:
        row = rows.get(sale.charge_id)
        count = by_source[sale.charge_id]
        if count > 1:
            rec.duplicated.append(sale.charge_id)
        if row is None or row[7] != "created" or count == 0:
            rec.lost.append(sale.charge_id)
            continue
        _, amount, currency, fee, commission, transfer, source, _, tr_id, tr_amount = row
        rec.gross_total[currency] = rec.gross_total.get(currency, 0) + amount
        rec.split_total[currency] = rec.split_total.get(currency, 0) + fee + commission + transfer
        made = stripe_by_id.get(tr_id)
        problems = []
        if amount != sale.amount or currency != sale.currency:
            problems.append("gross")
        if fee + commission + transfer != amount:
            problems.append("fee+commission+transfer != gross")
        if source != "actual" or fee != sale.fee:
            problems.append(f"fee {fee} ({source}) != actual {sale.fee}")
        if made is None or made["amount"] != transfer or tr_amount != transfer:
            problems.append("transfer amount differs from Stripe's")
        if made is not None and made["source_transaction"] != sale.charge_id:
            problems.append("transfer for another charge")
        if problems:
            rec.mismatched.append(f"{sale.charge_id}: {', '.join(problems)}")
    return rec


def transfers_done(db: Path, sales: Sequence[Sale]) -> bool:
    """Every sale has a CREATED transfer row."""
    ids = [s.charge_id for s in sales]
    created = {
        r[0] for r in db_rows(db, "SELECT charge_id FROM transfers WHERE status = 'created'")
    }
    return all(c in created for c in ids)


# -- the headless gateway as a subprocess --------------------------------------------------------

LISTENING_RE = re.compile(r"listening on (http://[^\s]+)")


class GatewayProcess:
    """``ursus-gateway serve`` in a subprocess; ``kill()`` is SIGKILL; always reaped."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        self.args = [str(GATEWAY_BIN), "serve", *args]
        self.env = dict(env)
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> str:
        """Start and wait for the "listening on" line; returns the base URL."""
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() >= deadline:
                self.kill()
                raise AssertionError("ursus-gateway serve did not start:\n" + "".join(self.lines))
            match = LISTENING_RE.search(line or "")
            if match:
                self.url = match.group(1)
                return self.url

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL and reap (idempotent)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (a clean stop) and reap; returns the exit code."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout)
        finally:
            self.kill()
        return code


def error_log(log_dir: Path) -> str:
    path = log_dir / "error.log"
    return path.read_text("utf-8") if path.exists() else ""
