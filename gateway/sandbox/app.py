"""The sandbox's Flask app: Stripe's form-encoded /v1 API over ``SandboxState``.

``create_app`` builds the Flask app; ``SandboxMiddleware`` wraps it to record
every request and inject faults before Flask sees the request (a dropped
connection has to happen at the WSGI level, below Flask's error handling).
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask, Response, current_app, request
from waitress.channel import ClientDisconnected

from gateway.sandbox.faults import FaultKind, FaultPlan
from gateway.sandbox.state import (
    IdempotentResult,
    RecordedRequest,
    SandboxState,
    StripeError,
    current_request,
    new_id,
    public,
)

Params = dict[str, Any]
Pairs = list[tuple[str, str]]

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SEG_RE = re.compile(r"\[([^\[\]]*)\]")


def _load_allowed() -> dict[str, dict[str, frozenset[str]]]:
    text = resources.files("gateway.sandbox").joinpath("fixtures/params.json").read_text("utf-8")
    paths = json.loads(text)["paths"]
    return {p: {m: frozenset(names) for m, names in ms.items()} for p, ms in paths.items()}


# Parameter names Stripe's spec allows per endpoint (scripts/extract_stripe_spec.py).
ALLOWED = _load_allowed()


def top_level(name: str) -> str:
    """``metadata[order_id]`` -> ``metadata``, ``expand[]`` -> ``expand``."""
    return name.split("[", 1)[0]


def decode_params(pairs: Iterable[tuple[str, str]]) -> Params:
    """Stripe's form encoding (``a[b]=c``, ``a[]=x``, ``a[0]=x``) to nested dicts/lists."""
    root: Params = {}
    for key, value in pairs:
        match = _KEY_RE.match(key)
        if match is None:
            raise StripeError(
                400,
                f"Invalid parameter name: {key}",
                code="parameter_unknown",
                param=key,
                store=False,
            )
        parts = [match.group(1), *_SEG_RE.findall(match.group(2))]
        node: Any = root
        for i, part in enumerate(parts):
            if not isinstance(node, dict):
                raise StripeError(
                    400,
                    f"Invalid parameter: {key}",
                    code="parameter_invalid",
                    param=top_level(key),
                    store=False,
                )
            if part == "":
                part = str(len(node))
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return {k: (v if k == "metadata" else _listify(v)) for k, v in root.items()}


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    items = {k: _listify(v) for k, v in value.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def expand(state: SandboxState, obj: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """Replace id strings named by ``expand`` paths (``a.b``, ``data.a``) with objects."""
    out = json.loads(json.dumps(public(obj)))
    for path in paths:
        _expand_one(state, out, path.split("."), path)
    return out


def _expand_one(state: SandboxState, obj: Any, parts: list[str], full: str) -> None:
    head, rest = parts[0], parts[1:]
    if obj.get("object") == "list" and head == "data" and rest:
        for item in obj["data"]:
            _expand_one(state, item, rest, full)
        return
    if head not in obj:
        raise StripeError(
            400,
            f"This property cannot be expanded ({full}).",
            code="parameter_invalid",
            param="expand",
            store=False,
        )
    value = obj[head]
    if isinstance(value, str):
        found = state.lookup(value)
        if found is None:
            raise StripeError(
                400,
                f"This property cannot be expanded ({full}).",
                code="parameter_invalid",
                param="expand",
                store=False,
            )
        value = obj[head] = json.loads(json.dumps(public(found)))
    if rest and isinstance(value, dict):
        _expand_one(state, value, rest, full)


def _json(body: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, indent=2) + "\n", status=status, mimetype="application/json")


def _state() -> SandboxState:
    state: SandboxState = current_app.extensions["ursus_sandbox"]
    return state


def _request_pairs() -> Pairs:
    pairs: Pairs = list(request.args.items(multi=True))
    if request.method == "POST":
        pairs.extend(request.form.items(multi=True))
    return pairs


def _check_auth(state: SandboxState) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "basic":  # curl -u sk_test_...:
        try:
            token = base64.b64decode(token).decode().split(":", 1)[0]
        except ValueError:
            token = ""
    elif scheme.lower() != "bearer":
        token = ""
    if not token:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
            store=False,
        )
    if not hmac.compare_digest(token.encode(), state.secret_key.encode()):
        shown = token[:8] + "*" * 4 + token[-4:] if len(token) > 12 else "****"
        raise StripeError(401, f"Invalid API Key provided: {shown}", store=False)


Handler = Callable[[SandboxState, Params], dict[str, Any]]
Handler2 = Callable[[str, Params], dict[str, Any]]


def _serve(template: str, handler: Handler, expandable: bool = True) -> Response:
    """Validate params, apply idempotency, run ``handler``, expand, answer."""
    state = _state()
    method = request.method
    allowed = ALLOWED.get(template, {}).get(method, frozenset())
    pairs = _request_pairs()
    for name, _ in pairs:
        if top_level(name) not in allowed:
            raise StripeError(
                400,
                f"Received unknown parameter: {top_level(name)}",
                code="parameter_unknown",
                param=top_level(name),
                store=False,
            )
    params = decode_params(pairs)
    key = request.headers.get("Idempotency-Key")
    current_request.set(
        {
            "id": request.environ.get("sandbox.request_id"),
            "idempotency_key": key if method == "POST" else None,
        }
    )

    def run() -> tuple[int, bytes]:
        try:
            obj = handler(state, params)
            expansions = params.get("expand") or []
            if isinstance(expansions, str):
                expansions = [expansions]
            body = expand(state, obj, expansions) if expandable else public(obj)
            return 200, _json(body).get_data()
        except StripeError as exc:
            if not exc.store:
                raise
            return exc.status, _json(exc.body(), exc.status).get_data()

    if method != "POST" or not key:
        status, data = run()
        return Response(data, status=status, mimetype="application/json")

    fingerprint = (method, request.path, tuple(sorted(pairs)))
    with state.lock:
        entry = state.idempotency.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise StripeError(
                    400,
                    "Keys for idempotent requests can only be used with the same "
                    "parameters they were first used with. Try using a key other than "
                    f"'{key}' if you meant to execute a different request.",
                    type="idempotency_error",
                    code="idempotency_error",
                    store=False,
                )
            if not entry.done:
                raise StripeError(
                    409,
                    "There is currently another in-progress request using this "
                    "Idempotent Key (that probably means you submitted twice, and the other "
                    "request is still going through): "
                    f"{key}. Please try again later.",
                    code="idempotency_key_in_use",
                    store=False,
                )
            resp = Response(entry.body, status=entry.status, mimetype="application/json")
            resp.headers["Idempotent-Replayed"] = "true"
            resp.headers["Original-Request"] = entry.request_id
            return resp
        entry = state.idempotency[key] = IdempotentResult(fingerprint)
    try:
        status, data = run()
    except BaseException:
        with state.lock:
            state.idempotency.pop(key, None)  # validation failures are not saved (Stripe)
        raise
    with state.lock:
        entry.status, entry.body, entry.done = status, data, True
        entry.request_id = request.environ.get("sandbox.request_id", "")
    return Response(data, status=status, mimetype="application/json")


def create_app(state: SandboxState) -> Flask:
    """The sandbox's /v1 API over ``state`` (wrap it in SandboxMiddleware to serve)."""
    app = Flask("gateway.sandbox")
    app.extensions["ursus_sandbox"] = state

    @app.before_request
    def authenticate() -> None:
        _check_auth(_state())

    @app.after_request
    def stripe_headers(resp: Response) -> Response:
        resp.headers["Request-Id"] = request.environ.get("sandbox.request_id", "")
        resp.headers["Stripe-Version"] = _state().api_version
        return resp

    @app.errorhandler(StripeError)
    def stripe_error(exc: StripeError) -> Response:
        resp = _json(exc.body(), exc.status)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="Stripe"'
        return resp

    @app.errorhandler(404)
    @app.errorhandler(405)
    def unrecognized(_exc: Exception) -> Response:
        return _json(
            StripeError(
                404,
                f"Unrecognized request URL ({request.method}: "
                f"{request.path}). Please see https://stripe.com/docs "
                "or we can help at https://support.stripe.com/.",
            ).body(),
            404,
        )

    def route(rule: str, template: str, methods: dict[str, Handler]) -> None:
        def view(**kwargs: str) -> Response:
            handler = methods[request.method]
            return _serve(template, lambda st, p: handler(st, {**p, "_path": kwargs}))

        app.add_url_rule(rule, endpoint=template, view_func=view, methods=list(methods))

    pid = "_path"
    route(
        "/v1/payment_intents",
        "/v1/payment_intents",
        {
            "POST": lambda st, p: st.create_payment_intent(p),
            "GET": lambda st, p: st.list_payment_intents(p),
        },
    )
    route(
        "/v1/payment_intents/<intent>",
        "/v1/payment_intents/{intent}",
        {
            "GET": lambda st, p: st.payment_intent(p[pid]["intent"]),
            "POST": lambda st, p: _update_payment_intent(st, p[pid]["intent"], p),
        },
    )

    def intent_action(action: str) -> Handler:
        def handle(st: SandboxState, p: Params) -> dict[str, Any]:
            method: Handler2 = getattr(st, f"{action}_payment_intent")
            return method(p[pid]["intent"], p)

        return handle

    for action in ("confirm", "capture", "cancel"):
        route(
            f"/v1/payment_intents/<intent>/{action}",
            f"/v1/payment_intents/{{intent}}/{action}",
            {"POST": intent_action(action)},
        )
    route(
        "/v1/charges/<charge>",
        "/v1/charges/{charge}",
        {"GET": lambda st, p: st.charge(p[pid]["charge"])},
    )
    route(
        "/v1/balance_transactions/<id>",
        "/v1/balance_transactions/{id}",
        {"GET": lambda st, p: st.balance_transaction(p[pid]["id"])},
    )
    route(
        "/v1/transfers",
        "/v1/transfers",
        {
            "POST": lambda st, p: st.create_transfer(p),
            "GET": lambda st, p: st.list_transfers(p),
        },
    )
    route(
        "/v1/transfers/<transfer>",
        "/v1/transfers/{transfer}",
        {"GET": lambda st, p: st.transfer(p[pid]["transfer"])},
    )
    route(
        "/v1/transfers/<id>/reversals",
        "/v1/transfers/{id}/reversals",
        {
            "POST": lambda st, p: st.create_reversal(p[pid]["id"], p),
            "GET": lambda st, p: st.list_reversals(p[pid]["id"], p),
        },
    )
    route(
        "/v1/refunds",
        "/v1/refunds",
        {
            "POST": lambda st, p: st.create_refund(p),
            "GET": lambda st, p: st.list_refunds(p),
        },
    )
    route(
        "/v1/refunds/<refund>",
        "/v1/refunds/{refund}",
        {"GET": lambda st, p: st.refund(p[pid]["refund"])},
    )
    route("/v1/events", "/v1/events", {"GET": lambda st, p: st.list_events(p)})
    route("/v1/events/<id>", "/v1/events/{id}", {"GET": lambda st, p: st.event(p[pid]["id"])})
    route(
        "/v1/accounts/<account>",
        "/v1/accounts/{account}",
        {"GET": lambda st, p: st.account(p[pid]["account"])},
    )
    route("/v1/balance", "/v1/balance", {"GET": lambda st, p: st.balance()})
    return app


def _update_payment_intent(state: SandboxState, pi_id: str, params: Params) -> dict[str, Any]:
    from gateway.sandbox.state import _metadata

    with state.lock:
        pi = state.payment_intent(pi_id)
        pi["metadata"] = _metadata(params, pi["metadata"])
        for name in ("description", "receipt_email", "transfer_group"):
            if isinstance(params.get(name), str):
                pi[name] = params[name] or None
        if params.get("amount") not in (None, ""):
            if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
                raise StripeError(
                    400,
                    "The amount cannot be updated in this status.",
                    code="payment_intent_unexpected_state",
                    param="amount",
                )
            pi["amount"] = int(params["amount"])
        return pi


class SandboxMiddleware:
    """Record every API request and inject faults before the Flask app runs."""

    def __init__(self, app: Callable[..., Any], state: SandboxState, faults: FaultPlan) -> None:
        self.app = app
        self.state = state
        self.faults = faults

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "")
        body = b""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            body = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = io.BytesIO(body)
        names = [k for k, _ in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)]
        if "form-urlencoded" in environ.get("CONTENT_TYPE", ""):
            names += [
                k for k, _ in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            ]
        request_id = new_id("req_", 14)
        environ["sandbox.request_id"] = request_id
        key = environ.get("HTTP_IDEMPOTENCY_KEY")

        def record(status: int, fault: FaultKind | None = None) -> None:
            self.state.record_request(
                RecordedRequest(
                    method, path, tuple(names), status, fault.value if fault else None, key
                )
            )

        if self.faults.latency > 0:
            time.sleep(self.faults.latency)
        fault = self.faults.decide(method, path)
        if fault is FaultKind.RESET:
            record(0, fault)
            # waitress closes the connection without writing anything when the
            # app raises ClientDisconnected before any output (channel.service).
            raise ClientDisconnected("sandbox fault: connection reset")
        if fault in (FaultKind.ERROR_500, FaultKind.ERROR_429):
            status = int(fault.value)
            record(status, fault)
            err = (
                StripeError(
                    500,
                    "An unknown error occurred (sandbox fault injection).",
                    type="api_error",
                    code=None,
                )
                if status == 500
                else StripeError(
                    429,
                    "Too many requests hit the API too quickly (sandbox fault injection).",
                    code="rate_limit",
                )
            )
            payload = (json.dumps(err.body(), indent=2) + "\n").encode()
            headers = [
                ("Content-Type", "application/json"),
                ("Request-Id", request_id),
                ("Content-Length", str(len(payload))),
            ]
            if self.faults.should_retry_header:
                headers.append(("Stripe-Should-Retry", "true"))
            start_response(
                f"{status} {'Internal Server Error' if status == 500 else 'Too Many Requests'}",
                headers,
            )
            return [payload]
        if fault is FaultKind.SLOW:
            time.sleep(self.faults.slow_seconds)

        seen: list[int] = []

        def capture_status(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen.append(int(status.split(" ", 1)[0]))
            if fault is FaultKind.RESET_AFTER:
                return lambda _data: None
            return (
                start_response(status, headers, exc_info)
                if exc_info
                else start_response(status, headers)
            )

        result = self.app(environ, capture_status)
        if fault is FaultKind.RESET_AFTER:
            try:
                for _chunk in result:  # let the request complete, then lose the answer
                    pass
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            record(seen[0] if seen else 0, fault)
            raise ClientDisconnected("sandbox fault: answer lost after processing")
        record(seen[0] if seen else 0, fault)
        return result
