"""The gateway's HTTP surface: create-payment-intent, the Stripe webhook, health. JSON only.

``create_app`` is a flaskr-style factory: collaborators are passed in and kept
in ``app.extensions["ursus"]``; handlers never read ``os.environ``. Every
response is JSON with ``X-Content-Type-Options: nosniff`` and
``Cache-Control: no-store``; errors look like
``{"error": {"code": "...", "message": "...", "field": "..."}}`` and never carry
a traceback or a secret (STYLE §8).

The webhook is the hot path (DESIGN §7). It is a bare WSGI handler
(``WebhookEndpoint``) that the edge middleware calls before Flask: no request
context, URL map, flask-limiter hooks or ``jsonify``; its limit counts only
rejected deliveries and costs one dictionary-cheap storage read per delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from limits import RateLimitItem, parse
from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from gateway.client_ip import TrustedProxies, client_ip, trusted_proxies
from gateway.errors import PermanentStripeError, StorageError, TransientStripeError
from gateway.ingest import IngestGauge
from gateway.logs import ACCESS_LOGGER, redact, secrets_regex
from gateway.validation import ValidationError, parse_payment_intent_request
from gateway.webhooks import WebhookRejected, verify_and_parse

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from gateway.config import GatewayConfig
    from gateway.health import HealthProbe
    from gateway.models import Counts

log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)

EXTENSION = "ursus"
CLIENT_IP_ENVIRON = "ursus.client_ip"  # computed once per request, reused by the access log
API_BODY_LIMIT = 16 * 1024  # a create-payment-intent body is a few hundred bytes
WEBHOOK_REJECTIONS_SCOPE = "ursus-webhook-rejections"
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"))
JSON_MIMETYPE = "application/json"
STRIPE_CODE_RE = re.compile(r"[a-z0-9_]{1,64}")

# Fixed bodies of the hot path: no json.dumps per delivery.
RECEIVED = b'{"received":true}'
RECEIVED_DUPLICATE = b'{"received":true,"duplicate":true}'

STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    405: "405 Method Not Allowed",
    413: "413 Content Too Large",
    429: "429 Too Many Requests",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}

HTTP_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "bad request"),
    401: ("unauthorized", "unauthorized"),
    403: ("forbidden", "forbidden"),
    404: ("not_found", "no such endpoint"),
    405: ("method_not_allowed", "method not allowed on this endpoint"),
    413: ("payload_too_large", "request body too large"),
    415: ("unsupported_media_type", "expected Content-Type: application/json"),
    429: ("rate_limited", "too many requests, slow down"),
}


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Per-client-IP limits (flask-limiter/limits notation)."""

    payment_intent: str = "10/minute"
    # Only rejected deliveries count, so Stripe's genuine ones are never throttled.
    webhook_rejections: str = "1000/hour"
    health: str = "120/minute"


class EventStore(Protocol):
    """The part of Ledger the web app uses."""

    def record_event(
        self,
        event_id: str,
        type: str,
        created: int,
        livemode: bool,
        object_id: str,
        raw: bytes,
    ) -> bool: ...

    def counts(self) -> Counts: ...


class PaymentIntents(Protocol):
    """The part of StripeGateway the web app uses."""

    def create_payment_intent(
        self,
        amount: int,
        currency: str,
        order_id: str,
        email: str,
        description: str,
        idempotency_key: str,
    ) -> tuple[str, str]: ...


@dataclass(slots=True)
class Services:
    """What the handlers need, in ``app.extensions["ursus"]``."""

    config: GatewayConfig
    ledger: EventStore
    stripe: PaymentIntents
    health: HealthProbe | None
    on_event: Callable[[], None] | None
    ingest: IngestGauge
    limiter: Limiter
    rate_limits: RateLimits
    trusted: TrustedProxies
    webhook_secrets: tuple[str, ...]
    webhook_body_limit: int
    webhook_rejections: RateLimitItem
    api_key_digests: tuple[bytes, ...]
    secret_pattern: re.Pattern[str]


def services() -> Services:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


# -- responses -----------------------------------------------------------------


def json_response(status: int, payload: Any) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    return Response(body, status, mimetype=JSON_MIMETYPE)


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return json_response(status, {"error": error})


# -- client address and API key ------------------------------------------------


def request_ip(svc: Services) -> str:
    """The client address (trusted proxies honoured), cached in the WSGI environ."""
    environ = request.environ
    ip = environ.get(CLIENT_IP_ENVIRON)
    if ip is None:
        ip = client_ip(environ.get("REMOTE_ADDR"), request.headers, svc.trusted) or "unknown"
        environ[CLIENT_IP_ENVIRON] = ip
    return str(ip)


def _limit_key() -> str:
    return request_ip(services())


def _digest(value: bytes) -> bytes:
    # Hashing first makes every comparison the same length, so timing tells
    # nothing about the keys' lengths either.
    return hashlib.sha256(value).digest()


def api_key_valid(presented: str | None, digests: Iterable[bytes]) -> bool:
    """Constant-time check against every configured key (rotation); no early exit."""
    # WSGI headers are latin-1 decoded: encoding back gives the bytes sent.
    candidate = _digest((presented or "").encode("latin-1", "replace"))
    valid = False
    for digest in digests:
        valid |= hmac.compare_digest(candidate, digest)
    return valid and bool(presented)


# -- routes --------------------------------------------------------------------


def create_payment_intent() -> Response:
    """POST /create-payment-intent: a PaymentIntent for one order (X-API-Key)."""
    svc = services()
    if not api_key_valid(request.headers.get("X-API-Key"), svc.api_key_digests):
        # fail2ban parses this exact line; never log what was presented.
        log.error("Invalid API key attempt from %s", request_ip(svc))
        return error_response(401, "invalid_api_key", "missing or invalid X-API-Key header")
    if request.mimetype != JSON_MIMETYPE:
        return error_response(415, "unsupported_media_type", "expected application/json")
    request.max_content_length = API_BODY_LIMIT
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return error_response(400, "invalid_json", "body is not valid JSON")
    try:
        order = parse_payment_intent_request(body)
    except ValidationError as exc:
        return error_response(400, exc.code, f"{exc.field} {exc.message}", exc.field)
    try:
        intent_id, client_secret = svc.stripe.create_payment_intent(
            amount=order.amount,
            currency=order.currency,
            order_id=order.order_id,
            email=order.email or "",
            description=order.description or "",
            idempotency_key=order.idempotency_key,
        )
    except TransientStripeError as exc:
        log.warning(
            "Stripe unavailable creating a PaymentIntent for %s: %s",
            order.order_id,
            redact(str(exc), svc.secret_pattern),
        )
        return error_response(503, "stripe_unavailable", "Stripe is unreachable, try again")
    except PermanentStripeError as exc:
        code = exc.code if exc.code and STRIPE_CODE_RE.fullmatch(exc.code) else "stripe_error"
        # "Invalid API Key provided: sk_test_****1234" and the like: mask before use.
        message = redact(exc.message or "Stripe refused the request", svc.secret_pattern)[:300]
        log.warning(
            "Stripe refused a PaymentIntent for %s: %s %s (HTTP %s)",
            order.order_id,
            code,
            message,
            exc.status,
        )
        if code == "idempotency_error":
            # The idempotency key is derived from the order: the same order_id came
            # again with other details. Say that, not Stripe's words about our key.
            return error_response(
                409,
                "order_conflict",
                "order_id was already used for a payment with a different email or "
                "description; use a new order_id for a different payment",
            )
        # 400/402: the order itself was refused; anything else is our set-up (key, account).
        status = 400 if exc.status in (400, 402) else 502
        return error_response(status, code, message)
    return json_response(200, {"client_secret": client_secret, "payment_intent_id": intent_id})


class WebhookEndpoint:
    """POST /webhook as a bare WSGI handler: verify Stripe's signature on the raw body, store, 200.

    Flask's request dispatch (~0.1-0.2 ms under waitress) costs more than the
    rest of this hot path, so the edge middleware routes ``/webhook`` here and
    Flask never sees it. Same JSON error shape, same security headers and access
    log line (the middleware adds them), same logging.
    """

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        try:
            with self.svc.ingest:
                status, body, extra = self.handle(environ)
        except Exception as exc:
            log.error("Unhandled error on POST /webhook", exc_info=exc)
            status, body, extra = 500, _error_body("internal_error", "internal error"), ()
        headers = [("Content-Type", JSON_MIMETYPE), ("Content-Length", str(len(body))), *extra]
        start_response(STATUS_LINES.get(status) or f"{status} Error", headers)
        return [body]

    def handle(self, environ: WSGIEnvironment) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
        svc = self.svc
        if environ.get("REQUEST_METHOD") != "POST":
            code, message = HTTP_ERRORS[405]
            return 405, _error_body(code, message), (("Allow", "POST"),)
        headers = EnvironHeaders(environ)
        ip = client_ip(environ.get("REMOTE_ADDR"), headers, svc.trusted) or "unknown"
        environ[CLIENT_IP_ENVIRON] = ip
        rate = svc.limiter.limiter
        if not rate.test(svc.webhook_rejections, WEBHOOK_REJECTIONS_SCOPE, ip):
            return 429, _error_body("rate_limited", "too many rejected deliveries"), ()
        if not svc.webhook_secrets:
            # Fail closed, and 503 so that Stripe keeps retrying until it is configured.
            log.error("Webhook delivery refused: no webhook secret is configured")
            return 503, _error_body("webhook_not_configured", "webhook secret not configured"), ()
        raw = read_body(environ, svc.webhook_body_limit)
        if raw is None:
            return self.reject(ip, 413, "payload_too_large", "request body too large")
        try:
            event = verify_and_parse(raw, environ.get("HTTP_STRIPE_SIGNATURE"), svc.webhook_secrets)
        except WebhookRejected as exc:
            return self.reject(ip, 400, exc.code, exc.message)
        try:
            inserted = svc.ledger.record_event(
                event.event_id, event.type, event.created, event.livemode, event.object_id, raw
            )
        except StorageError as exc:
            # Never a 200 for an event that is not on disk: Stripe retries a 503.
            log.error("Could not store webhook event %s (%s): %s", event.event_id, event.type, exc)
            return 503, _error_body("storage_unavailable", "event not stored, retry later"), ()
        if not inserted:
            return 200, RECEIVED_DUPLICATE, ()
        if svc.on_event is not None:
            try:
                svc.on_event()
            except Exception:  # the event is stored: the 200 must still go out
                log.exception("on_event callback failed after storing %s", event.event_id)
        return 200, RECEIVED, ()

    def reject(
        self, ip: str, status: int, code: str, message: str
    ) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
        # Counts toward the per-IP limit of rejected deliveries (a genuine one lost
        # to a misconfiguration is not lost: Stripe retries non-2xx for 3 days).
        self.svc.limiter.limiter.hit(self.svc.webhook_rejections, WEBHOOK_REJECTIONS_SCOPE, ip)
        log.warning("Rejected webhook from %s: %s", ip, code)
        return status, _error_body(code, message), ()


def read_body(environ: WSGIEnvironment, limit: int) -> bytes | None:
    """The raw request body, or None if it is larger than ``limit`` bytes."""
    stream = environ["wsgi.input"]
    length_header = environ.get("CONTENT_LENGTH")
    if length_header:
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            return b""  # no trustworthy length: an empty body fails verification
        if length > limit:
            return None  # refused before reading a byte
        return bytes(stream.read(length))
    if environ.get("wsgi.input_terminated"):
        # Chunked: the server (waitress) ends the stream; read one byte past the cap.
        data = bytes(stream.read(limit + 1))
        return None if len(data) > limit else data
    return b""


def health_check() -> Response:
    """GET /health: liveness, mode, Stripe reachability (cached), inbox backlog."""
    svc = services()
    mode = svc.config.mode
    payload: dict[str, Any] = {
        "status": "healthy",
        "mode": str(mode) if mode is not None else None,
        "stripe_connected": svc.health.stripe_connected if svc.health is not None else None,
    }
    try:
        payload["pending_events"] = svc.ledger.counts().pending_events
    except StorageError as exc:
        log.error("Health check: ledger unavailable: %s", exc)
        payload.update(status="unhealthy", pending_events=None, storage="unavailable")
        return json_response(503, payload)
    payload["storage"] = "ok"
    return json_response(200, payload)


# -- errors --------------------------------------------------------------------


def handle_http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code, message = HTTP_ERRORS.get(status, (f"http_{status}", "request failed"))
    response = error_response(status, code, message)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return response


def handle_unexpected_error(exc: Exception) -> Response:
    # The traceback goes to error.log only; the client learns nothing about the code.
    log.error("Unhandled error on %s %s", request.method, _printable(request.path), exc_info=exc)
    return error_response(500, "internal_error", "internal error")


# -- access log and security headers -------------------------------------------


def _printable(text: str, limit: int = 256) -> str:
    """Keep one request on one log line: no spaces, control or non-ASCII characters."""
    if not (text.isascii() and text.isprintable() and " " not in text):
        text = quote(text, safe="/:@!$&'()*+,;=-._~%")
    return text[:limit]


class EdgeMiddleware:
    """Routes /webhook past Flask, adds the security headers, writes the access log line."""

    def __init__(
        self, wsgi_app: WSGIApplication, trusted: TrustedProxies, webhook: WebhookEndpoint
    ) -> None:
        self.wsgi_app = wsgi_app
        self.trusted = trusted
        self.webhook = webhook

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        seen: list[Any] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.extend(SECURITY_HEADERS)
            seen.append(status)
            seen.append(headers)
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        if environ.get("PATH_INFO") == "/webhook":
            result: Iterable[bytes] = self.webhook(environ, start)
        else:
            result = self.wsgi_app(environ, start)
        if access_log.isEnabledFor(logging.INFO):
            self._log(environ, seen, started)
        return result

    def _log(self, environ: WSGIEnvironment, seen: list[Any], started: float) -> None:
        ip = environ.get(CLIENT_IP_ENVIRON)
        if ip is None:
            ip = client_ip(environ.get("REMOTE_ADDR"), EnvironHeaders(environ), self.trusted)
        status = seen[0][:3] if seen else "-"
        size = "-"
        for name, value in seen[1] if seen else ():
            if name.lower() == "content-length":
                size = value
                break
        access_log.info(
            "%s %s %s %s %s %.2f",
            ip or "-",
            _printable(environ.get("REQUEST_METHOD", "-"), 16),
            _printable(environ.get("PATH_INFO", "") or "/"),
            status,
            size,
            (time.perf_counter() - started) * 1000.0,
        )


# -- factory -------------------------------------------------------------------


def create_app(
    config: GatewayConfig,
    ledger: EventStore,
    stripe: PaymentIntents,
    health: HealthProbe | None = None,
    on_event: Callable[[], None] | None = None,
    *,
    rate_limits: RateLimits | None = None,
    ingest: IngestGauge | None = None,
) -> Flask:
    """The Flask app; ``on_event`` is called after a new event was stored (processor.wake).

    ``ingest`` counts the deliveries in flight (the processor defers to a burst).
    """
    rate_limits = rate_limits or RateLimits()
    settings = config.settings
    app = Flask(__name__, static_folder=None)
    # Werkzeug caps every body read at this (also chunked bodies with no length).
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_body_limit

    limiter = Limiter(
        key_func=_limit_key,
        storage_uri="memory://",  # explicit: one process, no shared store needed
        strategy="fixed-window",
        headers_enabled=False,
    )
    limiter.init_app(app)
    trusted = trusted_proxies(tuple(settings.trusted_proxies))
    app.extensions[EXTENSION] = Services(
        config=config,
        ledger=ledger,
        stripe=stripe,
        health=health,
        on_event=on_event,
        ingest=ingest or IngestGauge(),
        limiter=limiter,
        rate_limits=rate_limits,
        trusted=trusted,
        webhook_secrets=tuple(s for s in config.secrets.webhook_secrets if s),
        webhook_body_limit=settings.webhook_body_limit,
        webhook_rejections=parse(rate_limits.webhook_rejections),
        api_key_digests=tuple(_digest(k.encode("utf-8")) for k in config.secrets.api_keys if k),
        secret_pattern=secrets_regex(config.secrets.values),
    )

    app.add_url_rule(
        "/create-payment-intent",
        view_func=limiter.limit(rate_limits.payment_intent)(create_payment_intent),
        methods=["POST"],
        provide_automatic_options=False,  # no CORS: OPTIONS is a 405 like any other method
    )
    app.add_url_rule(
        "/health",
        view_func=limiter.limit(rate_limits.health)(health_check),
        methods=["GET"],
        provide_automatic_options=False,
    )
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected_error)
    # POST /webhook never reaches Flask: see WebhookEndpoint.
    webhook = WebhookEndpoint(app.extensions[EXTENSION])
    app.wsgi_app = EdgeMiddleware(app.wsgi_app, trusted, webhook)  # type: ignore[method-assign]
    return app
