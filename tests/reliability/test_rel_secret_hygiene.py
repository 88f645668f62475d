"""Suite 8: after a full run, no secret is in any log, CSV, settings file, ledger row or response.

The run, with distinctive secrets: the sandbox (in this process) plays Stripe and
delivers its own signed webhooks to ``ursus-gateway serve`` (a subprocess with
the secrets in its environment); customers pay through create-payment-intent;
one sale is refunded; wrong API keys are tried (one of them the Stripe secret
key itself), a secret is sent as a signature, in a path and in a query string;
a second gateway runs with a Stripe key the sandbox refuses (its create-payment-
intent and its processor both fail at Stripe); ``ursus-gateway export`` writes
the CSV and ``check-config`` reports. Then every file under the run's
directories (raw bytes, including the SQLite file and its WAL), every column of
every ledger table, every captured process output and every HTTP response body
is searched for the secrets and for recognisable fragments of them.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import requests
import stripe
from reliability_support import (
    GATEWAY_BIN,
    GatewayProcess,
    db_rows,
    gateway_env,
    sign,
    wait_until,
)

from gateway.config import Settings, save_settings
from gateway.sandbox import SandboxServer


@dataclass
class Secrets:
    """The run's secrets, and fragments whose presence would also be a leak."""

    stripe_key: str = field(default_factory=lambda: "sk_test_hyg" + secrets.token_hex(12))
    bad_stripe_key: str = field(default_factory=lambda: "sk_test_bad" + secrets.token_hex(12))
    webhook_secret: str = field(default_factory=lambda: "whsec_hyg" + secrets.token_hex(16))
    api_key: str = field(default_factory=lambda: "ursus-api-hyg-" + secrets.token_hex(12))

    def needles(self) -> dict[str, bytes]:
        out = {}
        for name, value in vars(self).items():
            out[name] = value.encode()
            out[f"{name} (random part)"] = value[-20:].encode()
        # Stripe's own masked echo of a refused key ("sk_test_****" + its last 4).
        out["masked refused key"] = f"****{self.bad_stripe_key[-4:]}".encode()
        return out


@dataclass
class Evidence:
    """Everything the run produced that a person or a machine might read."""

    files: dict[str, bytes] = field(default_factory=dict)
    responses: list[tuple[str, bytes]] = field(default_factory=list)
    ledger_values: list[tuple[str, bytes]] = field(default_factory=list)

    def leaks(self, needles: dict[str, bytes]) -> list[str]:
        found = []
        sources: Iterable[tuple[str, bytes]] = [
            *self.files.items(),
            *self.responses,
            *self.ledger_values,
        ]
        for where, data in sources:
            for name, needle in needles.items():
                if needle in data:
                    found.append(f"{name} in {where}")
        return found


class Recorder(requests.Session):
    """A session that keeps every response body it receives."""

    def __init__(self, evidence: Evidence) -> None:
        super().__init__()
        self.evidence = evidence

    def request(self, method: str, url: str, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        resp = super().request(method, url, *args, **kwargs)
        self.evidence.responses.append((f"{method} {url} -> {resp.status_code}", resp.content))
        return resp


def dump_ledger(db: Path) -> list[tuple[str, bytes]]:
    """Every column of every row of every table, as bytes."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = []
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (names from the db)
            columns = [d[0] for d in cursor.description]
            for i, row in enumerate(cursor):
                for column, value in zip(columns, row, strict=True):
                    data = value if isinstance(value, bytes) else str(value).encode()
                    out.append((f"ledger {table}[{i}].{column}", data))
        return out
    finally:
        conn.close()


def run(args: list[str], env: dict[str, str], cwd: Path, out: Path) -> int:
    done = subprocess.run(
        [str(GATEWAY_BIN), *args], env=env, cwd=cwd, capture_output=True, timeout=60, check=False
    )
    out.write_bytes(done.stdout + b"\n--- stderr ---\n" + done.stderr)
    return done.returncode


def test_no_secret_anywhere_after_a_full_run(tmp_path: Path) -> None:
    s = Secrets()
    evidence = Evidence()
    sandbox = SandboxServer(
        secret_key=s.stripe_key,
        webhook_secret=s.webhook_secret,
        connected_account_id="acct_hygiene01",
        retry_delays=(0.05, 0.1),
        seed=8,
    )
    sandbox.start()
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    env = gateway_env(sandbox, good_dir, api_key=s.api_key)
    save_settings(good_dir / "config" / "settings.json", Settings(platform_name="Hygiene"))
    bad_env = {
        **gateway_env(sandbox, bad_dir, api_key=s.api_key),
        "STRIPE_SECRET_KEY": s.bad_stripe_key,
    }
    good = GatewayProcess(["--data-dir", str(good_dir / "data"), "--port", "0"], env, tmp_path)
    bad = GatewayProcess(["--data-dir", str(bad_dir / "data"), "--port", "0"], bad_env, tmp_path)
    session = Recorder(evidence)
    client = stripe.StripeClient(
        s.stripe_key,
        base_addresses={"api": sandbox.url},
        http_client=stripe.RequestsClient(timeout=(5, 30)),
    )
    try:
        good.start()
        bad.start()
        sandbox.webhook_url = good.url + "/webhook"
        db = good_dir / "data" / "ursus.sqlite3"

        # Customers pay: the gateway creates the intents, the sandbox confirms and
        # delivers the signed charge events, the gateway pays the vendor.
        charges = []
        for i in range(5):
            resp = session.post(
                good.url + "/create-payment-intent",
                json={"amount": 1000 * (i + 1), "currency": "usd", "order_id": f"hyg-{i}"},
                headers={"X-API-Key": s.api_key},
                timeout=10,
            )
            assert resp.status_code == 200
            pi = client.v1.payment_intents.confirm(
                resp.json()["payment_intent_id"], params={"payment_method": "pm_card_visa"}
            )
            charges.append(str(pi.latest_charge))
        created_sql = "SELECT count(*) FROM transfers WHERE status = 'created'"
        wait_until(lambda: db_rows(db, created_sql)[0][0] == 5, 30, 0.05, "5 transfers")
        client.v1.refunds.create(params={"charge": charges[0], "amount": 500})
        wait_until(lambda: db_rows(db, "SELECT count(*) FROM refunds")[0][0] == 1, 30, 0.05)

        # Secrets where they do not belong: all refused, none echoed or logged.
        for key in ("", "wrong-key-0123456789", s.stripe_key, s.webhook_secret):
            resp = session.post(
                good.url + "/create-payment-intent",
                json={"amount": 1000, "currency": "usd", "order_id": "hyg-x"},
                headers={"X-API-Key": key},
                timeout=10,
            )
            assert resp.status_code == 401
        resp = session.post(
            good.url + "/webhook", data=b"{}", headers={"Stripe-Signature": s.webhook_secret}
        )
        assert resp.status_code == 400
        assert session.get(f"{good.url}/{s.api_key}", timeout=10).status_code == 404
        assert (
            session.get(f"{good.url}/{s.stripe_key}?k={s.api_key}", timeout=10).status_code == 404
        )
        assert session.get(good.url + "/health", timeout=10).status_code == 200

        # The gateway with a key Stripe refuses: a failed call on each path.
        resp = session.post(
            bad.url + "/create-payment-intent",
            json={"amount": 1000, "currency": "usd", "order_id": "hyg-bad"},
            headers={"X-API-Key": s.api_key},
            timeout=10,
        )
        assert resp.status_code == 502
        event = next(e for e in sandbox.state.events if e["type"] == "charge.succeeded")
        raw = json.dumps(event).encode()
        resp = session.post(
            bad.url + "/webhook",
            data=raw,
            headers={"Stripe-Signature": sign(raw, s.webhook_secret)},
            timeout=10,
        )
        assert resp.status_code == 200
        bad_db = bad_dir / "data" / "ursus.sqlite3"
        wait_until(
            lambda: db_rows(bad_db, "SELECT status FROM events") == [("failed",)],
            30,
            0.05,
            "the refused re-fetch",
        )
        assert session.get(bad.url + "/health", timeout=10).json()["stripe_connected"] is not True
    finally:
        codes = [gw.terminate() if gw.proc is not None else 0 for gw in (good, bad)]
        session.close()
        sandbox.stop()
    assert codes == [0, 0]
    (tmp_path / "good-serve.out").write_text("".join(good.lines))
    (tmp_path / "bad-serve.out").write_text("".join(bad.lines))

    csv_path = good_dir / "export.csv"
    args = ["export", "--data-dir", str(good_dir / "data"), "--out", str(csv_path)]
    assert run(args, env, tmp_path, tmp_path / "export.out") == 0
    assert csv_path.read_text().count("\n") == 6  # header + 5 charges
    assert run(["check-config"], env, tmp_path, tmp_path / "check-config.out") == 0

    for path in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        evidence.files[str(path.relative_to(tmp_path))] = path.read_bytes()
    evidence.ledger_values = dump_ledger(db) + dump_ledger(bad_db)

    # The search would see a leak: the evidence holds what it should.
    names = set(evidence.files)
    for expected in (
        "good/data/logs/error.log",
        "good/data/logs/access.log",
        "bad/data/logs/error.log",
        "good/export.csv",
        "good/config/settings.json",
        "good/data/ursus.sqlite3",
    ):
        assert expected in names, expected
    good_errors = evidence.files["good/data/logs/error.log"].decode()
    assert good_errors.count("Invalid API key attempt from 127.0.0.1") == 4
    bad_errors = evidence.files["bad/data/logs/error.log"].decode()
    # Stripe's refusal was logged on each path, with the key masked.
    assert bad_errors.count("Invalid API Key provided: [redacted key]") >= 2
    refused = [v for w, v in evidence.ledger_values if w.endswith(".last_error") and v]
    assert any(b"Invalid API Key" in v for v in refused)
    assert len(evidence.responses) >= 15
    planted = Evidence(files={"canary": b"x" + s.stripe_key.encode() + b"y"})
    assert planted.leaks(s.needles()) != []

    leaks = evidence.leaks(s.needles())
    assert leaks == []
    total = sum(len(v) for v in evidence.files.values())
    print(
        f"\nRESULT secret_hygiene: files={len(evidence.files)} bytes={total} "
        f"ledger_values={len(evidence.ledger_values)} responses={len(evidence.responses)} "
        f"secrets_searched={len(s.needles())} leaks={len(leaks)}"
    )
