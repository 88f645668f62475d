"""Suite 5: forged, altered, stale, malformed signatures over real HTTP -> all 4xx, none stored.

Each attack is a genuine-looking ``charge.succeeded`` for a real sandbox charge
(so a mistaken acceptance would go on to pay a transfer). After all of them the
ledger's inbox is still empty, Stripe saw no request from the processor, and a
correctly signed delivery of the same bodies is accepted (the suite is not
passing because nothing could get through).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import requests
from reliability_support import (
    db_rows,
    error_log,
    gateway_config,
    make_sales,
    sign,
    transfers_done,
    wait_until,
)

from gateway.sandbox import SandboxServer
from gateway.service import GatewayServer

Attack = tuple[str, bytes, dict[str, str]]


def v1(raw: bytes, secret: str, ts: int) -> str:
    return hmac.new(secret.encode(), f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()


def attacks(raw: bytes, other_raw: bytes, secret: str) -> list[Attack]:
    """(name, body, headers) of every forgery; ``raw`` is a genuine event body."""
    now = int(time.time())
    good = sign(raw, secret, now)
    json_ct = {"Content-Type": "application/json"}
    event = json.loads(raw)
    richer = json.loads(raw)
    richer["data"]["object"]["amount"] = 99_999_999
    tampered_amount = json.dumps(richer, indent=2).encode()
    retargeted = json.loads(other_raw)
    retargeted["id"] = event["id"] + "x"
    out: list[Attack] = [
        ("tampered body (amount)", tampered_amount, {"Stripe-Signature": good}),
        ("tampered body (trailing space)", raw + b" ", {"Stripe-Signature": good}),
        ("tampered body (other event, same signature)", other_raw, {"Stripe-Signature": good}),
        (
            "tampered body (re-serialised JSON)",
            json.dumps(event, separators=(",", ":")).encode(),
            {"Stripe-Signature": good},
        ),
        ("wrong secret", raw, {"Stripe-Signature": sign(raw, "whsec_attacker0123456789")}),
        (
            "secret without whsec_ prefix",
            raw,
            {"Stripe-Signature": sign(raw, secret.removeprefix("whsec_"))},
        ),
        ("expired timestamp (-301 s)", raw, {"Stripe-Signature": sign(raw, secret, now - 301)}),
        ("expired timestamp (-1 day)", raw, {"Stripe-Signature": sign(raw, secret, now - 86400)}),
        ("future timestamp (+301 s)", raw, {"Stripe-Signature": sign(raw, secret, now + 301)}),
        (
            "future timestamp (+10 years)",
            raw,
            {"Stripe-Signature": sign(raw, secret, now + 315_360_000)},
        ),
        ("missing header", raw, {}),
        ("empty header", raw, {"Stripe-Signature": ""}),
        ("v0-only header", raw, {"Stripe-Signature": f"t={now},v0={v1(raw, secret, now)}"}),
        ("v1 missing", raw, {"Stripe-Signature": f"t={now}"}),
        ("t missing", raw, {"Stripe-Signature": f"v1={v1(raw, secret, now)}"}),
        (
            "replay: new timestamp, old signature",
            raw,
            {"Stripe-Signature": f"t={now},v1={v1(raw, secret, now - 3600)}"},
        ),
        (
            "replay: old signature first t, new second t",
            raw,
            {"Stripe-Signature": f"t={now - 3600},t={now},v1={v1(raw, secret, now)}"},
        ),
        (
            "signature of the body with another timestamp prefix",
            raw,
            {"Stripe-Signature": f"t={now},v1={v1(raw, secret, now + 1)}"},
        ),
        (
            "many garbage v1 entries",
            raw,
            {
                "Stripe-Signature": f"t={now},"
                + ",".join(f"v1={secrets.token_hex(32)}" for _ in range(100))
            },
        ),
        ("garbage header", raw, {"Stripe-Signature": "t=,v1=,,,=,==,t=t,v1"}),
        ("non-numeric timestamp", raw, {"Stripe-Signature": f"t=now,v1={v1(raw, secret, now)}"}),
        ("negative timestamp", raw, {"Stripe-Signature": f"t=-1,v1={v1(raw, secret, -1)}"}),
        (
            "upper-case hex signature",
            raw,
            {"Stripe-Signature": f"t={now},v1={v1(raw, secret, now).upper()}"},
        ),
        (
            "truncated signature",
            raw,
            {"Stripe-Signature": f"t={now},v1={v1(raw, secret, now)[:32]}"},
        ),
        ("oversized header (9 KB)", raw, {"Stripe-Signature": good + ",v1=" + "a" * 9000}),
        ("oversized header (60 KB)", raw, {"Stripe-Signature": f"t={now}," + "v1=0," * 12000}),
        (
            "non-ASCII header",
            raw,
            {"Stripe-Signature": good.replace("t=", "t\u00e9=").encode().decode("latin-1")},
        ),
        ("valid signature, empty body", b"", {"Stripe-Signature": sign(b"", secret, now)}),
        (
            "valid signature, not JSON",
            b"not json",
            {"Stripe-Signature": sign(b"not json", secret, now)},
        ),
        (
            "valid signature of another body, this body",
            raw,
            {"Stripe-Signature": sign(json.dumps(retargeted).encode(), secret, now)},
        ),
    ]
    return [(name, body, {**json_ct, **headers}) for name, body, headers in out]


def test_every_forgery_is_rejected_and_nothing_is_stored(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path
) -> None:
    [sale, other] = make_sales(sandbox, [(10_000, "usd"), (20_000, "usd")], prefix="sig")
    raw = dict(sale.events)[sale.events[0][0]]
    other_raw = other.events[0][1]
    server = GatewayServer(gateway_config(sandbox, tmp_path))
    started.append(server)
    server.start()
    db = tmp_path / "data" / "ursus.sqlite3"
    stripe_calls_before = len(sandbox.state.requests)

    cases = attacks(raw, other_raw, sandbox.webhook_secret)
    results: list[tuple[str, int, dict[str, object]]] = []
    with requests.Session() as session:
        for name, body, headers in cases:
            resp = session.post(server.webhook_url, data=body, headers=headers, timeout=10)
            results.append((name, resp.status_code, resp.json()))

    accepted = [(name, status) for name, status, _ in results if not 400 <= status < 500]
    assert accepted == []
    assert all(isinstance(body.get("error"), dict) for _, _, body in results)
    assert db_rows(db, "SELECT count(*) FROM events") == [(0,)]
    assert db_rows(db, "SELECT count(*) FROM charges") == [(0,)]
    processor_calls = [
        r
        for r in sandbox.state.requests[stripe_calls_before:]
        if r.path.startswith(("/v1/charges", "/v1/transfers"))
    ]
    assert processor_calls == []  # no charge was re-fetched, nothing was paid
    assert error_log(tmp_path / "logs").count("Rejected webhook from 127.0.0.1") == len(cases)

    # The same bodies, honestly signed, go through: the gateway was not just deaf.
    with requests.Session() as session:
        for event_id, body in (*sale.events, *other.events):
            resp = session.post(
                server.webhook_url,
                data=body,
                headers={"Stripe-Signature": sign(body, sandbox.webhook_secret)},
                timeout=10,
            )
            assert resp.status_code == 200, event_id
    wait_until(lambda: transfers_done(db, [sale, other]), 30, 0.05, "honest deliveries paid")
    codes = Counter(str(body["error"]["code"]) for _, _, body in results)  # type: ignore[index]
    print(
        f"\nRESULT signatures: attacks={len(cases)} rejected_4xx={len(cases) - len(accepted)} "
        f"stored=0 codes={dict(sorted(codes.items()))} honest_after=4/4"
    )


def test_a_valid_signature_cannot_be_replayed_into_a_second_event(
    sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path
) -> None:
    """A captured genuine delivery replayed verbatim stores nothing new and pays nothing twice."""
    [sale] = make_sales(sandbox, [(5_000, "usd")], prefix="replay")
    event_id, raw = sale.events[0]
    server = GatewayServer(gateway_config(sandbox, tmp_path))
    started.append(server)
    server.start()
    db = tmp_path / "data" / "ursus.sqlite3"
    header = sign(raw, sandbox.webhook_secret)
    post: Callable[[str], requests.Response] = lambda h: requests.post(  # noqa: E731
        server.webhook_url, data=raw, headers={"Stripe-Signature": h}, timeout=10
    )
    assert post(header).json() == {"received": True}
    # The attacker replays the captured request verbatim within the tolerance window.
    for _ in range(20):
        assert post(header).json() == {"received": True, "duplicate": True}
    wait_until(lambda: transfers_done(db, [sale]), 30, 0.05, "the one transfer")
    assert db_rows(db, "SELECT event_id FROM events") == [(event_id,)]
    assert len(sandbox.state.transfers) == 1
