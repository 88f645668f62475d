"""Suite 6: hypothesis-driven requests to every endpoint -> never a 5xx, a traceback or a crash.

Requests mix methods, paths, headers (API key, signature, proxies, content
type), bodies (malformed and deep JSON, wrong types, huge numbers, unicode,
oversized) and *validly signed* fuzzed events, so the fuzz reaches the inbox
and the processor, not just the signature check. Two drives:

- the whole WSGI app (edge middleware + bare webhook + Flask) through Flask's test
  client, with a real SQLite ledger and the sandbox as Stripe: many examples, fast;
- a smaller sample of the same requests over loopback to a waitress-served
  GatewayServer, plus hand-written HTTP protocol abuse on a raw socket.

Every response: status < 500 except a legitimate 503 (storage/Stripe
unavailable); no ``Traceback``/``File "..."`` in the body; JSON with an
``error`` object for every 4xx the app writes. Afterwards the processor handles
every stored fuzz event without an internal error, and the server still answers.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import API_KEY, db_rows, error_log, gateway_config, sign

from gateway.app import RateLimits, create_app
from gateway.config import GatewayConfig
from gateway.ledger import Ledger
from gateway.logs import setup_logging
from gateway.processor import Processor
from gateway.sandbox import SandboxServer
from gateway.service import GatewayServer
from gateway.stripe_api import StripeGateway

LEGITIMATE_503 = {"storage_unavailable", "stripe_unavailable", "webhook_not_configured"}
TRACE_RE = re.compile(r'Traceback \(most recent call last\)|File "[^"]*", line \d+')
PATHS = [
    "/webhook",
    "/create-payment-intent",
    "/health",
    "/",
    "/webhook/",
    "/WEBHOOK",
    "//webhook",
    "/webhook/../health",
    "/create-payment-intent/",
    "/health.json",
    "/static/app.js",
    "/%00",
    "/webhook%00",
    "/%2e%2e/%2e%2e/etc/passwd",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]
CHARGE_TYPES = ["charge.succeeded", "charge.updated", "charge.captured", "charge.refunded"]
BIG_SIZES = [16 * 1024 + 1, 512 * 1024 + 1, 2 * 1024 * 1024]

# -- strategies ------------------------------------------------------------------------

latin1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
# Every code point, lone surrogates included (they are rare in st.characters, so a few
# are mixed in on purpose): JSON can carry them ("\ud800") and Python str holds them,
# but they cannot be encoded as UTF-8 on the way to SQLite or Stripe (findings F4, F5).
any_text = st.text(st.characters(exclude_categories=()), max_size=40) | st.text(
    st.characters(categories=["Cs"]), min_size=1, max_size=3
).map(lambda s: "x" + s)
header_text = st.text(latin1, max_size=80)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    any_text,
    st.sampled_from(["", "usd", "USD", "jpy", "eur", "xxx", "0", "1e309", "ch_", "NaN"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
amounts = st.one_of(
    st.integers(min_value=-10, max_value=200),
    st.integers(min_value=99_999_990, max_value=100_000_010),
    st.integers(),
    st.sampled_from([50, 1000, 10_000, 2**63, -(2**63), 10**30]),
    json_values,
)
ids = st.one_of(
    st.from_regex(r"\Ach_[A-Za-z0-9]{1,30}\Z"),
    st.from_regex(r"\Aevt_[A-Za-z0-9]{1,30}\Z"),
    st.text(max_size=30),
    st.text(max_size=300),
    any_text,
    st.sampled_from(
        ["ch_test", "ch_/../../v1/transfers", "ch_?x=1#y", "ch_%2F", "ch_\u00e9\u4e2d"]
    ),
    json_values,
)


@st.composite
def payment_bodies(draw: st.DrawFn) -> Any:
    """A valid order with 0-3 fields replaced by fuzz, removed, or an unknown one added."""
    body: dict[str, Any] = {
        "amount": draw(st.integers(50, 99_999_999)),
        "currency": draw(st.sampled_from(["usd", "eur", "jpy", "USD"])),
        "order_id": draw(st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")),
    }
    if draw(st.booleans()):
        body["email"] = draw(st.sampled_from(["a@b.co", "", None, "\u00e9@\u00e9.fr"]))
    if draw(st.booleans()):
        body["description"] = draw(st.text(max_size=600))
    fuzzers: dict[str, st.SearchStrategy[Any]] = {
        "amount": amounts,
        "currency": st.sampled_from(["kwd", "bif", "xxx", "us", "usdd", ""]) | json_values,
        "order_id": ids | st.from_regex(r"\A[A-Za-z0-9_-]{60,70}\Z"),
        "email": st.sampled_from(["x@y", "a b@c.de", "a@b.c\n", "\ud800@x.co"]) | json_values,
        "description": st.text(min_size=490, max_size=510) | any_text | json_values,
    }
    for name in draw(st.sets(st.sampled_from(sorted(fuzzers)), max_size=3)):
        if draw(st.integers(0, 4)) == 0:
            body.pop(name, None)
        else:
            body[name] = draw(fuzzers[name])
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=70))] = draw(json_values)
    return body if draw(st.integers(0, 9)) else draw(json_values)


@st.composite
def event_bodies(draw: st.DrawFn) -> Any:
    obj: dict[str, Any] = {"id": draw(ids), "object": draw(st.just("charge") | json_values)}
    event_id = (
        st.from_regex(r"\Aevt_[A-Za-z0-9]{8,30}\Z")
        | st.text(min_size=1, max_size=300)
        | any_text.filter(bool)
    )
    event: dict[str, Any] = {
        "id": draw(event_id if draw(st.integers(0, 9)) else json_values),
        "object": "event",
        "type": draw(
            st.sampled_from(CHARGE_TYPES) if draw(st.integers(0, 4)) else json_values | any_text
        ),
        "created": draw(amounts),
        "livemode": draw(st.booleans() | json_values),
        "data": draw(st.just({"object": obj}) | json_values),
    }
    if draw(st.integers(0, 3)) == 0:
        for key in draw(st.sets(st.sampled_from(sorted(event)), max_size=2)):
            del event[key]
    return event


class FuzzRequest:
    """One generated request (not a dataclass: Hypothesis prints those field by field)."""

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        sign_body: bool = False,  # add a valid Stripe-Signature when sending
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.sign_body = sign_body

    def __repr__(self) -> str:
        # Failing examples are printed: a 2 MiB body would be unreadable (and warns).
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        return (
            f"FuzzRequest({self.method!r}, {self.path!r}, query={self.query!r}, "
            f"headers={self.headers!r}, body[{len(self.body)}]={body!r}, "
            f"sign_body={self.sign_body})"
        )


def encode(value: Any, draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 23))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return b"x" * draw(st.sampled_from(BIG_SIZES))
    if kind == 2:
        depth = draw(st.sampled_from([100, 1000, 100_000]))
        return b"[" * depth + b"]" * depth
    if kind == 3:
        text = json.dumps(value)
        return text[: draw(st.integers(0, max(0, len(text) - 1)))].encode()
    if kind == 4:
        # surrogatepass: a lone surrogate becomes bytes that are not valid UTF-8.
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if kind == 5:
        return json.dumps(value).encode("utf-16")
    return json.dumps(value).encode()


@st.composite
def requests_(draw: st.DrawFn) -> FuzzRequest:
    target = draw(st.sampled_from(["webhook"] * 8 + ["payment"] * 7 + ["health", "other"] * 2))
    post = st.sampled_from(["POST"] * 24 + METHODS)
    if target == "webhook":
        method, path = draw(post), "/webhook"
        body = encode(draw(event_bodies() if draw(st.integers(0, 4)) else json_values), draw)
    elif target == "payment":
        method, path = draw(post), "/create-payment-intent"
        body = encode(draw(payment_bodies()), draw)
    elif target == "health":
        method, path, body = draw(st.sampled_from(["GET"] * 4 + METHODS)), "/health", b""
    else:
        method = draw(st.sampled_from(METHODS) | st.from_regex(r"\A[A-Z]{1,12}\Z"))
        path = draw(st.sampled_from(PATHS) | st.text(max_size=60).map(lambda t: "/" + quote(t)))
        body = encode(draw(json_values), draw) if draw(st.booleans()) else b""
    headers: dict[str, str] = {}
    usual = draw(st.integers(0, 9)) < 7  # mostly well-formed envelopes, so the fuzz goes deep
    content_type = (
        "application/json"
        if usual
        else draw(
            st.sampled_from(
                [
                    "application/json; charset=utf-8",
                    "APPLICATION/JSON",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "",
                ]
            )
            | header_text
        )
    )
    if content_type:
        headers["Content-Type"] = content_type
    if usual:
        headers["X-API-Key"] = API_KEY
    else:
        key = draw(
            st.sampled_from(["", API_KEY + " ", API_KEY.upper(), API_KEY[:-1]]) | header_text
        )
        if key or draw(st.booleans()):
            headers["X-API-Key"] = key
    sign_body = False
    if path == "/webhook":
        choice = draw(st.integers(0, 4))
        if choice <= 2:
            sign_body = True
        elif choice == 3:
            headers["Stripe-Signature"] = draw(header_text)
    for name in draw(
        st.sets(
            st.sampled_from(
                ["X-Forwarded-For", "CF-Connecting-IP", "X-Real-IP", "Forwarded", "Host", "Accept"]
            ),
            max_size=3,
        )
    ):
        headers[name] = draw(
            header_text | st.sampled_from(["1.2.3.4", "::1", "1.2.3.4, 10.0.0.1", "999.1.1.1"])
        )
    query = draw(st.sampled_from(["", "", "a=1", "key=" + API_KEY[:4], "x=%00&y=%ff"]))
    return FuzzRequest(method, path, query, headers, body, sign_body)


# -- checks ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the fuzz saw, for the figures in docs/RELIABILITY.md."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    waitress_pages: int = 0
    problems: list[str] = field(default_factory=list)

    def check(self, req: FuzzRequest, status: int, headers: dict[str, str], body: bytes) -> None:
        self.requests += 1
        self.statuses[status] += 1
        what = f"{req.method} {req.path} -> {status}"
        text = body.decode("utf-8", "replace")
        if TRACE_RE.search(text):
            self.problems.append(f"{what}: stack trace in the body")
        if req.method == "HEAD" or status in (0, 204):
            return
        if "x-content-type-options" not in headers and b"(generated by ursus)" in body:
            # waitress refused the request before the app saw it (a body over its 1 MiB
            # cap): its own text page, finding F2. Only the status is checked.
            self.waitress_pages += 1
            if status >= 500:
                self.problems.append(f"{what}: waitress server error {body[:120]!r}")
            return
        payload: Any = None
        try:
            payload = json.loads(body)
        except ValueError:
            self.problems.append(f"{what}: body is not JSON: {body[:80]!r}")
        if headers.get("x-content-type-options") != "nosniff":
            self.problems.append(f"{what}: no security headers")
        if not (headers.get("content-type") or "").startswith("application/json"):
            self.problems.append(f"{what}: content type {headers.get('content-type')!r}")
        error = payload.get("error") if isinstance(payload, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        self.codes[f"{req.path if req.path in PATHS[:3] else 'other'}:{code or status}"] += 1
        if status >= 400:
            if not (isinstance(error, dict) and isinstance(error.get("code"), str)):
                self.problems.append(f"{what}: no error object: {body[:80]!r}")
            if not isinstance((error or {}).get("message"), str):
                self.problems.append(f"{what}: error without message")
        if status >= 500 and not (status == 503 and (error or {}).get("code") in LEGITIMATE_503):
            self.problems.append(f"{what}: server error {body[:120]!r}")


def fuzz_settings(slow: bool, examples: int) -> settings:
    return settings(
        max_examples=examples * 10 if slow else examples,
        deadline=None,
        database=None,
        derandomize=not slow,  # the default run is reproducible; the long one explores
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


def processor_survives(ledger: Ledger, stripe: StripeGateway, config: GatewayConfig) -> int:
    """Run the processor over every stored fuzz event; nothing may be an internal error."""
    Processor(ledger, stripe, config).run_once()
    return len(ledger.pending_events(100_000, time.time() + 3600))


# -- the whole WSGI app through Flask's test client ------------------------------------------


@pytest.fixture
def app_env(sandbox: SandboxServer, tmp_path: Path) -> Iterator[tuple[Any, Ledger, Any]]:
    config = gateway_config(sandbox, tmp_path)
    ledger = Ledger.open(config.database_url)
    stripe = StripeGateway(sandbox.secret_key, api_base=sandbox.url, max_network_retries=0)
    # The limits are not under test here (suite 7 is): they would turn most answers into 429.
    limits = RateLimits("1000000/minute", "1000000/hour", "1000000/minute")
    app = create_app(config, ledger, stripe, rate_limits=limits)
    logs = setup_logging(config.logs_dir, secrets=config.secrets.values)
    try:
        yield app, ledger, (stripe, config)
    finally:
        logs.teardown()
        stripe.close()
        ledger.close()


def test_fuzzed_requests_through_the_wsgi_app(
    app_env: tuple[Any, Ledger, Any], sandbox: SandboxServer, slow_mode: bool
) -> None:
    app, ledger, (stripe, config) = app_env
    client = app.test_client()
    tally = Tally()

    @fuzz_settings(slow_mode, 600)
    @given(requests_())
    def one(req: FuzzRequest) -> None:
        headers = dict(req.headers)
        if req.sign_body:
            try:
                headers["Stripe-Signature"] = sign(req.body, sandbox.webhook_secret)
            except UnicodeDecodeError:
                headers["Stripe-Signature"] = "t=1,v1=00"
        resp = client.open(
            req.path,
            method=req.method,
            query_string=req.query,
            headers=headers,
            data=req.body,
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )
        body = resp.get_data()
        resp.close()
        tally.check(req, resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, body)

    one()
    db = Path(config.database_url.removeprefix("sqlite:///"))
    stored_events = db_rows(db, "SELECT count(*) FROM events")[0][0]
    pending_after = processor_survives(ledger, stripe, config)
    internal_sql = "SELECT count(*) FROM events WHERE last_error LIKE 'internal error%'"
    internal = db_rows(db, internal_sql)[0][0]
    log = error_log(config.logs_dir)
    assert tally.problems == []
    assert internal == 0
    assert "Unhandled error" not in log
    assert stored_events > 0  # signed fuzz got through to the inbox and the processor
    print(
        f"\nRESULT fuzz_wsgi: requests={tally.requests} "
        f"statuses={dict(sorted(tally.statuses.items()))} "
        f"stored_events={stored_events} pending_after_processor={pending_after} "
        f"internal_errors={internal} problems={len(tally.problems)} "
        f"codes={dict(sorted(tally.codes.items()))}"
    )


EDGE_EVENTS = {
    "created 2**63": {"created": 2**63},
    "created -2**63-1": {"created": -(2**63) - 1},
    "created 10**30": {"created": 10**30},
    "lone surrogate in the event id": {"id": "evt_\ud800"},
    "lone surrogate in the type": {"type": "charge.\udfff"},
    "lone surrogate in the charge id": {
        "data": {"object": {"id": "ch_\ud83d", "object": "charge"}}
    },
}
EDGE_ORDERS = {
    "lone surrogate in the description": {"description": "a\ud800b"},
    "lone surrogate in the email": {"email": "\ud800@example.com"},
}


@pytest.mark.parametrize(
    ("path", "change"),
    [pytest.param("/webhook", v, id=k) for k, v in EDGE_EVENTS.items()]
    + [pytest.param("/create-payment-intent", v, id=k) for k, v in EDGE_ORDERS.items()],
)
def test_edge_values_found_by_fuzzing(
    app_env: tuple[Any, Ledger, Any], sandbox: SandboxServer, path: str, change: dict[str, Any]
) -> None:
    """Inputs the fuzz found (or should find): a 4xx or a 200, never a 500."""
    app, _, (_, config) = app_env
    if path == "/webhook":
        event = {
            "id": "evt_edge0001",
            "object": "event",
            "type": "charge.succeeded",
            "created": 1_764_158_401,
            "data": {"object": {"id": "ch_edge0001", "object": "charge"}},
        }
        body = json.dumps({**event, **change}).encode()
        headers = {"Stripe-Signature": sign(body, sandbox.webhook_secret)}
    else:
        order = {"amount": 1000, "currency": "usd", "order_id": "edge-1", **change}
        body = json.dumps(order).encode()
        headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    resp = app.test_client().post(path, data=body, headers=headers)
    tally = Tally()
    req = FuzzRequest("POST", path, "", headers, body)
    tally.check(req, resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.data)
    assert tally.problems == []
    assert "Unhandled error" not in error_log(config.logs_dir)


# -- over loopback: waitress in front ------------------------------------------------------


def send_http(url: str, req: FuzzRequest, secret: str) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    headers = dict(req.headers)
    if req.sign_body:
        try:
            headers["Stripe-Signature"] = sign(req.body, secret)
        except UnicodeDecodeError:
            headers["Stripe-Signature"] = "t=1,v1=00"
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        target = req.path + (f"?{req.query}" if req.query else "")
        try:
            conn.request(req.method, target, body=req.body or None, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except (BrokenPipeError, ConnectionResetError):
            # waitress refused an oversized body and closed while it was still being
            # sent: an early refusal, not a failure (status 0 = closed).
            return 0, {}, b""
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send raw bytes, half-close, read whatever comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close early on junk: what it answered still counts
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


PROTOCOL_ABUSE: list[tuple[str, bytes]] = [
    ("garbage request line", b"GARBAGE\r\n\r\n"),
    ("HTTP/0.9 request", b"GET /health\r\n\r\n"),
    ("unknown HTTP version", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n"),
    ("negative Content-Length", b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
    (
        "huge Content-Length",
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
    ),
    (
        "two different Content-Lengths",
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\n{}",
    ),
    (
        "Content-Length shorter than the body",
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n{}",
    ),
    (
        "Content-Length longer than the body",
        b"POST /create-payment-intent HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{}",
    ),
    (
        "bad chunk size",
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n{}\r\n0\r\n\r\n",
    ),
    (
        "huge chunk size",
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n{}",
    ),
    (
        "chunked and Content-Length",
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n"
        b"\r\n2\r\n{}\r\n0\r\n\r\n",
    ),
    (
        "chunked body over the webhook limit",
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"10000\r\n" + b"x" * 0x10000 + b"\r\n" for _ in range(9))
        + b"0\r\n\r\n",
    ),
    ("header without colon", b"GET /health HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"),
    ("NUL in a header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-API-Key: a\x00b\r\n\r\n"),
    ("space before colon", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("obsolete line folding", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
    ("non-ASCII path", b"GET /\xff\xfe\xc3\x28 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("non-ASCII header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-API-Key: \xff\xfe\r\n\r\n"),
    ("absolute-form target", b"GET http://evil.example/health HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("asterisk target", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("100 KB URL", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("300 KB header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n"),
    (
        "5,000 headers",
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 5000 + b"\r\n",
    ),
    (
        "signature header 200 KB",
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nStripe-Signature: t=1,"
        + b"v1=a," * 40_000
        + b"\r\n\r\n{}",
    ),
    (
        "pipelined requests",
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3 + b"POST /webhook HTTP/1.1\r\n\r\n",
    ),
    (
        "Expect: 100-continue",
        b"POST /webhook HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
    ),
    ("only CRLFs", b"\r\n" * 1000),
    ("binary noise", bytes(range(256)) * 64),
]


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP responses in a raw byte stream (Content-Length framed, as waitress sends)."""
    out = []
    while data.startswith(b"HTTP/"):
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        # 1xx (100 Continue) has no body; waitress frames everything else with a length.
        length = 0 if status < 200 else int(headers.get("content-length", len(rest)))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


@pytest.fixture
def served(sandbox: SandboxServer, started: list[GatewayServer], tmp_path: Path) -> GatewayServer:
    server = GatewayServer(gateway_config(sandbox, tmp_path))
    started.append(server)
    server.start()
    return server


def test_fuzzed_requests_over_loopback(
    served: GatewayServer, sandbox: SandboxServer, slow_mode: bool, tmp_path: Path
) -> None:
    tally = Tally()

    @fuzz_settings(slow_mode, 80)
    @given(requests_())
    def one(req: FuzzRequest) -> None:
        status, headers, body = send_http(served.url, req, sandbox.webhook_secret)
        tally.check(req, status, headers, body)

    one()
    assert tally.problems == []
    assert served.is_running and served.processor.is_running
    assert "Unhandled error" not in error_log(tmp_path / "logs")
    print(
        f"\nRESULT fuzz_http: requests={tally.requests} "
        f"statuses={dict(sorted(tally.statuses.items()))} problems={len(tally.problems)} "
        f"waitress_text_pages={tally.waitress_pages}"
    )


def test_http_protocol_abuse_never_breaks_the_server(served: GatewayServer, tmp_path: Path) -> None:
    outcomes: dict[str, str] = {}
    problems: list[str] = []
    for name, data in PROTOCOL_ABUSE:
        responses = parse_responses(raw_exchange(served.port, data))
        outcomes[name] = (
            ",".join(
                f"{s}{'' if h.get('x-content-type-options') == 'nosniff' else '(waitress)'}"
                for s, h, _ in responses
            )
            or "closed"
        )
        for status, headers, body in responses:
            if status >= 500:
                problems.append(f"{name}: {status} {body[:100]!r}")
            if TRACE_RE.search(body.decode("latin-1")):
                problems.append(f"{name}: stack trace")
            if headers.get("x-content-type-options") == "nosniff" and status >= 400:
                # Written by the app (not by waitress's own protocol error page): JSON.
                error = json.loads(body).get("error")
                if not isinstance(error, dict):
                    problems.append(f"{name}: app error without an error object")
        # After each one the server still answers a normal request.
        status, _, body = send_http(
            served.url, FuzzRequest("GET", "/health", "", {}, b""), "whsec_unused"
        )
        if status != 200:
            problems.append(f"after {name}: health {status}")
    assert problems == []
    assert "Unhandled error" not in error_log(tmp_path / "logs")
    assert served.is_running
    print(f"\nRESULT protocol_abuse: cases={len(PROTOCOL_ABUSE)} outcomes={outcomes}")
