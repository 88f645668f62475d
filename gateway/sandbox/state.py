"""The sandbox's in-memory Stripe: objects, balances, events, request log.

Everything here is guarded by one re-entrant lock; the Flask handlers call the
``SandboxState`` methods from waitress worker threads, tests call the helpers
(fee overrides, ``release_balance_transactions``, ``make_available``) from
their own thread. Business rules raise ``StripeError``, which the app turns
into Stripe's error JSON.
"""

from __future__ import annotations

import contextvars
import copy
import fnmatch
import json
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from gateway.fees import FeeSchedule, estimate_stripe_fee

API_VERSION = "2024-06-20"
OBJECT_PREFIXES = {
    "pi_": "payment_intents",
    "ch_": "charges",
    "txn_": "balance_transactions",
    "tr_": "transfers",
    "trr_": "reversals",
    "re_": "refunds",
    "evt_": "events_by_id",
}
# Test payment methods: docs.stripe.com/testing#cards
CARD_BRANDS = {
    "pm_card_visa": ("visa", "4242"),
    "pm_card_visa_debit": ("visa", "5556"),
    "pm_card_mastercard": ("mastercard", "4444"),
    "pm_card_amex": ("amex", "8431"),
}
DECLINED_CARDS = {
    "pm_card_chargeDeclined": "generic_decline",
    "pm_card_visa_chargeDeclined": "generic_decline",
    "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
}
# Metadata key on a PaymentIntent that fixes the fee of its charge (tests).
FEE_METADATA_KEY = "sandbox_fee"
INSUFFICIENT_FUNDS_MESSAGE = (
    "You have insufficient available funds in your Stripe account. Try adding funds "
    "directly to your available balance by creating Charges using the 4000000000000077 "
    "test card. See: https://stripe.com/docs/testing#available-balance"
)

# The Stripe-side context of the API request being served (event.request).
current_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "sandbox_request", default=None
)


def _load_templates() -> dict[str, Any]:
    text = resources.files("gateway.sandbox").joinpath("fixtures/objects.json").read_text("utf-8")
    return json.loads(text)


TEMPLATES = _load_templates()
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking id: ``ch_`` + random base62."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def template(kind: str) -> dict[str, Any]:
    return copy.deepcopy(TEMPLATES[kind])


class StripeError(Exception):
    """An API error in Stripe's shape; ``store=False`` keeps it out of idempotency."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
        store: bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type
        self.store = store
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            err["param"] = self.param
        err.update(self.extra)
        return {"error": err}


def missing(param: str) -> StripeError:
    return StripeError(
        400,
        f"Missing required param: {param}.",
        code="parameter_missing",
        param=param,
        store=False,
    )


def no_such(kind: str, ident: str, param: str | None = "id", status: int = 404) -> StripeError:
    return StripeError(status, f"No such {kind}: '{ident}'", code="resource_missing", param=param)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request the sandbox received (param names as sent: ``metadata[order_id]``)."""

    method: str
    path: str
    params: tuple[str, ...]
    status: int
    fault: str | None = None
    idempotency_key: str | None = None


@dataclass(slots=True)
class IdempotentResult:
    fingerprint: tuple[Any, ...]
    status: int = 0
    body: bytes = b""
    done: bool = False
    request_id: str = ""
    created: float = field(default_factory=time.time)


def _int(params: Mapping[str, Any], name: str, *, required: bool = False) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing(name)
        return None
    try:
        return int(str(value))
    except ValueError:
        raise StripeError(
            400,
            f"Invalid integer: {value}",
            code="parameter_invalid_integer",
            param=name,
            store=False,
        ) from None


def _str(params: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str):
        raise StripeError(
            400, f"Invalid string: {name}", code="parameter_invalid_string", param=name, store=False
        )
    return value


def _bool(params: Mapping[str, Any], name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise StripeError(
        400, f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=name, store=False
    )


def _metadata(params: Mapping[str, Any], base: Mapping[str, str] | None = None) -> dict[str, str]:
    meta = dict(base or {})
    value = params.get("metadata")
    if value is None or value == "":
        return meta
    if not isinstance(value, dict):
        raise StripeError(
            400,
            "Invalid metadata: must be an object",
            code="parameter_invalid",
            param="metadata",
            store=False,
        )
    for key, val in value.items():
        if val == "":
            meta.pop(key, None)  # Stripe: an empty value unsets the key
        else:
            meta[str(key)] = str(val)
    return meta


def _currency(params: Mapping[str, Any]) -> str:
    cur = _str(params, "currency", required=True)
    assert cur is not None
    return cur.lower()


class SandboxState:
    """Thread-safe store of the sandbox's Stripe objects and its request log."""

    def __init__(
        self,
        secret_key: str,
        connected_account_id: str,
        *,
        fee_schedule: FeeSchedule | None = None,
        webhook_url: str | None = None,
        api_version: str = API_VERSION,
    ) -> None:
        self.lock = threading.RLock()
        self.secret_key = secret_key
        self.connected_account_id = connected_account_id
        self.fee_schedule = fee_schedule or FeeSchedule()
        self.api_version = api_version
        self._webhook_url = webhook_url
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.balance_transactions: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.reversals: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # oldest first
        self.events_by_id: dict[str, dict[str, Any]] = {}
        self.delivery_success: dict[str, bool | None] = {}
        self.requests: list[RecordedRequest] = []
        self.idempotency: dict[str, IdempotentResult] = {}
        # Balances per currency, minor units. Card funds start pending.
        self.available: dict[str, int] = {}
        self.pending: dict[str, int] = {}
        # Fee overrides: by PaymentIntent or charge id, or for the next charges.
        self.fee_overrides: dict[str, int] = {}
        self._next_fees: deque[int] = deque()
        # While True, captured charges get no balance transaction until
        # release_balance_transactions() (a slow asynchronous capture).
        self.hold_balance_transactions = False
        self._held: list[str] = []
        self.event_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._pm_counter = 0

    # ----------------------------------------------------------------- helpers
    @property
    def webhook_url(self) -> str | None:
        with self.lock:
            return self._webhook_url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        with self.lock:
            self._webhook_url = url or None

    def set_fee_override(self, object_id: str, fee: int) -> None:
        """Make the charge of this PaymentIntent (or this charge id) cost ``fee``."""
        with self.lock:
            self.fee_overrides[object_id] = fee

    def override_next_fee(self, *fees: int) -> None:
        """The next charges (in order) get these fees instead of the schedule's."""
        with self.lock:
            self._next_fees.extend(fees)

    def make_available(self, currency: str | None = None) -> None:
        """Move pending funds to available (Stripe does this days later)."""
        with self.lock:
            for cur in list(self.pending):
                if currency is None or cur == currency.lower():
                    self.available[cur] = self.available.get(cur, 0) + self.pending.pop(cur)
            for txn in self.balance_transactions.values():
                if currency is None or txn["currency"] == currency.lower():
                    txn["status"] = "available"

    def add_available(self, amount: int, currency: str = "usd") -> None:
        """Top up the available balance (like a charge with the 0077 test card)."""
        with self.lock:
            cur = currency.lower()
            self.available[cur] = self.available.get(cur, 0) + amount

    def record_request(self, req: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(req)

    def record_delivery(self, event_id: str, ok: bool) -> None:
        with self.lock:
            if ok:
                self.delivery_success[event_id] = True
                event = self.events_by_id.get(event_id)
                if event is not None and event["pending_webhooks"] > 0:
                    event["pending_webhooks"] -= 1
            elif self.delivery_success.get(event_id) is not True:
                self.delivery_success[event_id] = False

    def lookup(self, object_id: str) -> dict[str, Any] | None:
        """Any stored object by id prefix."""
        for prefix, attr in OBJECT_PREFIXES.items():
            if object_id.startswith(prefix):
                found: dict[str, Any] | None = getattr(self, attr).get(object_id)
                return found
        return None

    def _get(self, attr: str, kind: str, object_id: str) -> dict[str, Any]:
        with self.lock:
            obj = getattr(self, attr).get(object_id)
            if obj is None:
                raise no_such(kind, object_id)
            return obj

    def payment_intent(self, pi_id: str) -> dict[str, Any]:
        return self._get("payment_intents", "payment_intent", pi_id)

    def charge(self, charge_id: str) -> dict[str, Any]:
        return self._get("charges", "charge", charge_id)

    def balance_transaction(self, txn_id: str) -> dict[str, Any]:
        return self._get("balance_transactions", "balance transaction", txn_id)

    def transfer(self, tr_id: str) -> dict[str, Any]:
        return self._get("transfers", "transfer", tr_id)

    def refund(self, re_id: str) -> dict[str, Any]:
        return self._get("refunds", "refund", re_id)

    def event(self, evt_id: str) -> dict[str, Any]:
        return self._get("events_by_id", "event", evt_id)

    def account(self, acct_id: str) -> dict[str, Any]:
        if acct_id != self.connected_account_id:
            raise StripeError(
                404,
                f"No such account: '{acct_id}'",
                code="resource_missing" if acct_id.startswith("acct_") else "account_invalid",
                param="account",
            )
        acct = template("account")
        acct.update(
            id=acct_id,
            type="express",
            charges_enabled=True,
            payouts_enabled=True,
            details_submitted=True,
            email="vendor@sandbox.invalid",
            metadata={},
        )
        acct["external_accounts"]["url"] = f"/v1/accounts/{acct_id}/external_accounts"
        acct["requirements"].update(currently_due=[], eventually_due=[], disabled_reason=None)
        return acct

    def balance(self) -> dict[str, Any]:
        with self.lock:
            bal = template("balance")
            currencies = sorted(set(self.available) | set(self.pending)) or ["usd"]
            bal["available"] = [
                {
                    "amount": self.available.get(c, 0),
                    "currency": c,
                    "source_types": {"card": self.available.get(c, 0)},
                }
                for c in currencies
            ]
            bal["pending"] = [
                {
                    "amount": self.pending.get(c, 0),
                    "currency": c,
                    "source_types": {"card": self.pending.get(c, 0)},
                }
                for c in currencies
            ]
            bal["connect_reserved"] = [{"amount": 0, "currency": c} for c in currencies]
            return bal

    # ------------------------------------------------------------------ events
    def emit(
        self,
        type_: str,
        obj: Mapping[str, Any],
        previous_attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store an event (a snapshot of ``obj``) and hand it to the listeners."""
        with self.lock:
            event = template("event")
            event.update(
                id=new_id("evt_"),
                api_version=self.api_version,
                created=int(time.time()),
                livemode=False,
                pending_webhooks=1 if self._webhook_url else 0,
                request=dict(current_request.get() or {"id": None, "idempotency_key": None}),
                type=type_,
                data={"object": copy.deepcopy(public(obj))},
            )
            if previous_attributes is not None:
                event["data"]["previous_attributes"] = copy.deepcopy(dict(previous_attributes))
            self.events.append(event)
            self.events_by_id[event["id"]] = event
            self.delivery_success[event["id"]] = None
            for listener in list(self.event_listeners):
                listener(event)  # in order, under the lock: deliveries keep emission order
            return event

    def list_events(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            items = list(reversed(self.events))  # newest first, like Stripe
            wanted: list[str] = []
            if params.get("type"):
                wanted.append(str(params["type"]))
            types = params.get("types")
            if types:
                wanted.extend(_as_list(types, "types"))
            if wanted:
                items = [e for e in items if any(fnmatch.fnmatchcase(e["type"], w) for w in wanted)]
            success = _bool(params, "delivery_success")
            if success is not None:
                items = [e for e in items if self.delivery_success.get(e["id"]) is success]
            items = _filter_created(items, params.get("created"))
            return paginate(items, params, "/v1/events")

    # ---------------------------------------------------------- payment intents
    def create_payment_intent(self, params: Mapping[str, Any]) -> dict[str, Any]:
        amount = _int(params, "amount", required=True)
        currency = _currency(params)
        assert amount is not None
        if amount < 1:
            raise StripeError(
                400,
                "This value must be greater than or equal to 1.",
                code="parameter_invalid_integer",
                param="amount",
                store=False,
            )
        capture_method = _str(params, "capture_method") or "automatic"
        if capture_method not in ("automatic", "automatic_async", "manual"):
            raise StripeError(
                400,
                f"Invalid capture_method: {capture_method}",
                code="parameter_invalid",
                param="capture_method",
                store=False,
            )
        apm = params.get("automatic_payment_methods")
        types = _as_list(params.get("payment_method_types") or ["card"], "payment_method_types")
        with self.lock:
            pi = template("payment_intent")
            pi_id = new_id("pi_")
            pi.update(
                id=pi_id,
                amount=amount,
                amount_capturable=0,
                amount_received=0,
                automatic_payment_methods=(
                    {"enabled": _bool(apm, "enabled") or False, "allow_redirects": "always"}
                    if isinstance(apm, dict)
                    else None
                ),
                capture_method=capture_method,
                client_secret=f"{pi_id}_secret_{new_id('', 25)}",
                confirmation_method="automatic",
                created=int(time.time()),
                currency=currency,
                description=_str(params, "description"),
                latest_charge=None,
                livemode=False,
                metadata=_metadata(params),
                payment_method=None,
                payment_method_types=types,
                receipt_email=_str(params, "receipt_email"),
                status="requires_payment_method",
                transfer_group=_str(params, "transfer_group"),
                statement_descriptor=_str(params, "statement_descriptor"),
                statement_descriptor_suffix=_str(params, "statement_descriptor_suffix"),
            )
            self.payment_intents[pi_id] = pi
            self.emit("payment_intent.created", pi)
            if _bool(params, "confirm"):
                return self.confirm_payment_intent(
                    pi_id,
                    {k: v for k, v in params.items() if k in ("payment_method", "receipt_email")},
                )
            return pi

    def confirm_payment_intent(self, pi_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            pi = self.payment_intent(pi_id)
            if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
                raise StripeError(
                    400,
                    f"This PaymentIntent's status is {pi['status']}; it cannot be confirmed.",
                    code="payment_intent_unexpected_state",
                    param=None,
                    extra={"payment_intent": copy.deepcopy(pi)},
                )
            pm = _str(params, "payment_method") or pi["payment_method"]
            if pm is None:
                raise StripeError(
                    400,
                    "You cannot confirm this PaymentIntent because it's missing a payment "
                    "method. Update the PaymentIntent with a payment method and then confirm "
                    "it again.",
                    code="payment_intent_unexpected_state",
                )
            if pm not in CARD_BRANDS and pm not in DECLINED_CARDS:
                raise no_such("PaymentMethod", pm, param="payment_method", status=400)
            if _str(params, "capture_method"):
                pi["capture_method"] = params["capture_method"]
            if _str(params, "receipt_email"):
                pi["receipt_email"] = params["receipt_email"]
            pi["payment_method"] = self._payment_method_id(pm)
            charge = self._new_charge(pi, pm)
            pi["latest_charge"] = charge["id"]
            if pm in DECLINED_CARDS:
                pi["status"] = "requires_payment_method"
                pi["last_payment_error"] = {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": DECLINED_CARDS[pm],
                    "message": "Your card was declined.",
                    "charge": charge["id"],
                }
                self.emit("charge.failed", charge)
                self.emit("payment_intent.payment_failed", pi)
                raise StripeError(
                    402,
                    "Your card was declined.",
                    code="card_declined",
                    type="card_error",
                    extra={
                        "decline_code": DECLINED_CARDS[pm],
                        "charge": charge["id"],
                        "payment_intent": copy.deepcopy(pi),
                    },
                )
            if pi["capture_method"] == "manual":
                pi["status"] = "requires_capture"
                pi["amount_capturable"] = pi["amount"]
                self.emit("charge.succeeded", charge)
                self.emit("payment_intent.amount_capturable_updated", pi)
                return pi
            pi["status"] = "succeeded"
            pi["amount_received"] = pi["amount"]
            charge.update(captured=True, amount_captured=charge["amount"])
            # API >= 2024-04-10: balance_transaction is null in charge.succeeded
            # and arrives with charge.updated (DESIGN §7).
            self.emit("charge.succeeded", charge)
            self.emit("payment_intent.succeeded", pi)
            self._settle_charge(charge, charge["amount"])
            return pi

    def capture_payment_intent(self, pi_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            pi = self.payment_intent(pi_id)
            if pi["status"] != "requires_capture":
                raise StripeError(
                    400,
                    f"This PaymentIntent could not be captured because it has a status of "
                    f"{pi['status']}. Only a PaymentIntent with one of the following statuses "
                    f"may be captured: requires_capture.",
                    code="payment_intent_unexpected_state",
                )
            amount = _int(params, "amount_to_capture") or pi["amount_capturable"]
            if amount > pi["amount_capturable"] or amount < 1:
                raise StripeError(
                    400,
                    "The amount to capture must be less than or equal to the amount_capturable.",
                    code="amount_too_large",
                    param="amount_to_capture",
                )
            pi["metadata"] = _metadata(params, pi["metadata"])
            charge = self.charges[pi["latest_charge"]]
            previous = {"captured": False, "amount_captured": 0}
            charge.update(
                captured=True, amount_captured=amount, amount_refunded=charge["amount"] - amount
            )
            pi.update(status="succeeded", amount_received=amount, amount_capturable=0)
            self.emit("charge.captured", charge, previous)
            self.emit("payment_intent.succeeded", pi)
            self._settle_charge(charge, amount)
            return pi

    def cancel_payment_intent(self, pi_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            pi = self.payment_intent(pi_id)
            if pi["status"] in ("succeeded", "canceled"):
                raise StripeError(
                    400,
                    f"You cannot cancel this PaymentIntent because it has a status of "
                    f"{pi['status']}.",
                    code="payment_intent_unexpected_state",
                )
            pi.update(
                status="canceled",
                canceled_at=int(time.time()),
                amount_capturable=0,
                cancellation_reason=_str(params, "cancellation_reason"),
            )
            self.emit("payment_intent.canceled", pi)
            return pi

    def _payment_method_id(self, pm: str) -> str:
        self._pm_counter += 1
        return new_id("pm_")

    def _new_charge(self, pi: dict[str, Any], pm: str) -> dict[str, Any]:
        brand, last4 = CARD_BRANDS.get(pm, ("visa", "0002"))
        declined = pm in DECLINED_CARDS
        charge = template("charge")
        charge.update(
            id=new_id("ch_"),
            amount=pi["amount"],
            amount_captured=0,
            amount_refunded=0,
            balance_transaction=None,
            billing_details={"address": None, "email": None, "name": None, "phone": None},
            calculated_statement_descriptor="URSUS SANDBOX",
            captured=False,
            created=int(time.time()),
            currency=pi["currency"],
            description=pi["description"],
            failure_code="card_declined" if declined else None,
            failure_message="Your card was declined." if declined else None,
            livemode=False,
            metadata=dict(pi["metadata"]),
            paid=not declined,
            payment_intent=pi["id"],
            payment_method=pi["payment_method"],
            payment_method_details={
                "card": {
                    "brand": brand,
                    "last4": last4,
                    "country": "US",
                    "exp_month": 12,
                    "exp_year": 2034,
                    "funding": "credit",
                    "network": brand,
                },
                "type": "card",
            },
            receipt_email=pi["receipt_email"],
            refunded=False,
            status="failed" if declined else "succeeded",
            transfer_group=pi["transfer_group"],
        )
        if declined:
            charge["outcome"] = {
                "network_status": "declined_by_network",
                "reason": DECLINED_CARDS[pm],
                "risk_level": "normal",
                "seller_message": "The bank did not return any further details with this decline.",
                "type": "issuer_declined",
            }
        self.charges[charge["id"]] = charge
        return charge

    def _fee_for(self, charge: dict[str, Any], amount: int) -> int:
        pi = self.payment_intents.get(charge["payment_intent"] or "")
        meta_fee = (pi or {}).get("metadata", {}).get(FEE_METADATA_KEY)
        if meta_fee is not None:
            return int(meta_fee)
        for key in (charge["id"], charge["payment_intent"]):
            if key in self.fee_overrides:
                return self.fee_overrides[key]
        if self._next_fees:
            return self._next_fees.popleft()
        return estimate_stripe_fee(amount, charge["currency"], self.fee_schedule)

    def _settle_charge(self, charge: dict[str, Any], amount: int) -> None:
        """Create the charge's balance transaction (now, or when released)."""
        fee = self._fee_for(charge, amount)
        now = int(time.time())
        txn = template("balance_transaction")
        txn.update(
            id=new_id("txn_"),
            amount=amount,
            available_on=now + 2 * 86400,
            created=now,
            currency=charge["currency"],
            description=charge["description"],
            exchange_rate=None,
            fee=fee,
            net=amount - fee,
            fee_details=[
                {
                    "amount": fee,
                    "application": None,
                    "currency": charge["currency"],
                    "description": "Stripe processing fees",
                    "type": "stripe_fee",
                }
            ],
            reporting_category="charge",
            source=charge["id"],
            status="pending",
            type="charge",
        )
        self.balance_transactions[txn["id"]] = txn
        cur = charge["currency"]
        self.pending[cur] = self.pending.get(cur, 0) + txn["net"]
        charge["_txn"] = txn["id"]
        if self.hold_balance_transactions:
            self._held.append(charge["id"])
        else:
            self._attach_txn(charge)

    def _attach_txn(self, charge: dict[str, Any]) -> None:
        txn_id = charge.pop("_txn")
        charge["balance_transaction"] = txn_id
        self.emit("charge.updated", public(charge), {"balance_transaction": None})

    def release_balance_transactions(self) -> int:
        """Attach held balance transactions (each emits charge.updated); returns how many."""
        with self.lock:
            held, self._held = self._held, []
            for charge_id in held:
                self._attach_txn(self.charges[charge_id])
            return len(held)

    # --------------------------------------------------------------- transfers
    def _available_txn(
        self,
        amount: int,
        currency: str,
        description: str | None,
        source: str,
        now: int,
        *,
        type: str,
        category: str,
    ) -> dict[str, Any]:
        """Store a fee-less balance transaction available at once (transfer, reversal,
        refund); ``amount`` is signed as it moves the platform's balance."""
        txn = template("balance_transaction")
        txn.update(
            id=new_id("txn_"),
            amount=amount,
            available_on=now,
            created=now,
            currency=currency,
            description=description,
            exchange_rate=None,
            fee=0,
            fee_details=[],
            net=amount,
            reporting_category=category,
            source=source,
            status="available",
            type=type,
        )
        self.balance_transactions[txn["id"]] = txn
        return txn

    def create_transfer(self, params: Mapping[str, Any]) -> dict[str, Any]:
        amount = _int(params, "amount", required=True)
        currency = _currency(params)
        destination = _str(params, "destination", required=True)
        assert amount is not None and destination is not None
        source = _str(params, "source_transaction")
        with self.lock:
            if destination != self.connected_account_id:
                raise StripeError(
                    400,
                    f"No such destination: '{destination}'",
                    code="resource_missing",
                    param="destination",
                )
            if amount < 1:
                raise StripeError(
                    400,
                    "This value must be greater than or equal to 1.",
                    code="parameter_invalid_integer",
                    param="amount",
                    store=False,
                )
            if source is not None:
                charge = self.charges.get(source)
                if charge is None:
                    raise no_such("charge", source, param="source_transaction", status=400)
                if not charge["captured"] or not charge["paid"]:
                    raise StripeError(
                        400,
                        f"The source transaction {source} has not been captured.",
                        code="charge_not_captured",
                        param="source_transaction",
                    )
                if charge["currency"] != currency:
                    raise StripeError(
                        400,
                        f"The currency of source_transaction's balance transaction "
                        f"({charge['currency']}) must be the same as the transfer currency "
                        f"({currency}).",
                        code="parameter_invalid",
                        param="currency",
                    )
                left = self.transferable(source)
                if amount > left:
                    raise StripeError(
                        400,
                        f"The transfer amount ({amount}) exceeds the amount left to "
                        f"transfer from source transaction {source} ({left}).",
                        code="amount_too_large",
                        param="amount",
                    )
                self.pending[currency] = self.pending.get(currency, 0) - amount
            else:
                if amount > self.available.get(currency, 0):
                    raise StripeError(
                        400, INSUFFICIENT_FUNDS_MESSAGE, code="balance_insufficient", param=None
                    )
                self.available[currency] -= amount
            now = int(time.time())
            tr_id = new_id("tr_")
            txn = self._available_txn(
                -amount,
                currency,
                _str(params, "description"),
                tr_id,
                now,
                type="transfer",
                category="transfer",
            )
            tr = template("transfer")
            tr.update(
                id=tr_id,
                amount=amount,
                amount_reversed=0,
                balance_transaction=txn["id"],
                created=now,
                currency=currency,
                description=_str(params, "description"),
                destination=destination,
                destination_payment=new_id("py_"),
                livemode=False,
                metadata=_metadata(params),
                reversed=False,
                source_transaction=source,
                source_type="card",
                transfer_group=_str(params, "transfer_group"),
                reversals={
                    "data": [],
                    "has_more": False,
                    "object": "list",
                    "total_count": 0,
                    "url": f"/v1/transfers/{tr_id}/reversals",
                },
            )
            self.transfers[tr_id] = tr
            self.emit("transfer.created", tr)
            return tr

    def transferable(self, charge_id: str) -> int:
        """What may still be transferred with source_transaction=charge_id."""
        with self.lock:
            charge = self.charge(charge_id)
            moved = sum(
                t["amount"] - t["amount_reversed"]
                for t in self.transfers.values()
                if t["source_transaction"] == charge_id
            )
            return _unrefunded(charge) - moved

    def list_transfers(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            items = list(reversed(self.transfers.values()))
            for key in ("destination", "transfer_group"):
                if params.get(key):
                    items = [t for t in items if t[key] == params[key]]
            items = _filter_created(items, params.get("created"))
            return paginate(items, params, "/v1/transfers")

    def create_reversal(self, tr_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            tr = self.transfer(tr_id)
            left = tr["amount"] - tr["amount_reversed"]
            amount = _int(params, "amount")
            amount = left if amount is None else amount
            if left == 0:
                raise StripeError(
                    400,
                    f"Transfer {tr_id} has already been fully reversed.",
                    code="parameter_invalid",
                    param="amount",
                )
            if amount < 1 or amount > left:
                raise StripeError(
                    400,
                    f"Transfer reversal amount ({amount}) is greater than the amount left "
                    f"on the transfer ({left}).",
                    code="amount_too_large",
                    param="amount",
                )
            now = int(time.time())
            trr_id = new_id("trr_")
            txn = self._available_txn(
                amount,
                tr["currency"],
                _str(params, "description"),
                trr_id,
                now,
                type="transfer_refund",
                category="transfer_reversal",
            )
            self.available[tr["currency"]] = self.available.get(tr["currency"], 0) + amount
            rev = template("transfer_reversal")
            rev.update(
                id=trr_id,
                amount=amount,
                balance_transaction=txn["id"],
                created=now,
                currency=tr["currency"],
                destination_payment_refund=new_id("pyr_"),
                metadata=_metadata(params),
                source_refund=None,
                transfer=tr_id,
            )
            self.reversals[trr_id] = rev
            previous = {
                "amount_reversed": tr["amount_reversed"],
                "reversed": tr["reversed"],
                "reversals": copy.deepcopy(tr["reversals"]),
            }
            tr["amount_reversed"] += amount
            tr["reversed"] = tr["amount_reversed"] == tr["amount"]
            tr["reversals"]["data"].insert(0, rev)
            tr["reversals"]["total_count"] += 1
            self.emit("transfer.reversed", tr, previous)
            return rev

    def list_reversals(self, tr_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            tr = self.transfer(tr_id)
            return paginate(list(tr["reversals"]["data"]), params, tr["reversals"]["url"])

    # ----------------------------------------------------------------- refunds
    def create_refund(self, params: Mapping[str, Any]) -> dict[str, Any]:
        charge_id = _str(params, "charge")
        pi_id = _str(params, "payment_intent")
        with self.lock:
            if charge_id is None and pi_id is None:
                raise StripeError(
                    400,
                    "One of the following params should be provided for this request: "
                    "payment_intent or charge.",
                    code="parameter_missing",
                    param="charge",
                    store=False,
                )
            if pi_id is not None:
                pi = self.payment_intents.get(pi_id)
                if pi is None:
                    raise no_such("payment_intent", pi_id, param="payment_intent", status=400)
                if pi["latest_charge"] is None or (charge_id and charge_id != pi["latest_charge"]):
                    raise StripeError(
                        400,
                        f"PaymentIntent {pi_id} has no charge to refund.",
                        code="charge_not_refundable",
                        param="payment_intent",
                    )
                charge_id = pi["latest_charge"]
            assert charge_id is not None
            charge = self.charges.get(charge_id)
            if charge is None:
                raise no_such("charge", charge_id, param="charge", status=400)
            if not charge["captured"] or not charge["paid"]:
                raise StripeError(
                    400,
                    f"Charge {charge_id} has not been captured; cancel its PaymentIntent instead.",
                    code="charge_not_refundable",
                    param="charge",
                )
            left = _unrefunded(charge)
            if left <= 0:
                raise StripeError(
                    400,
                    f"Charge {charge_id} has already been refunded.",
                    code="charge_already_refunded",
                    param="charge",
                )
            amount = _int(params, "amount")
            amount = left if amount is None else amount
            if amount < 1 or amount > left:
                raise StripeError(
                    400,
                    f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                    f"({left})",
                    code="amount_too_large",
                    param="amount",
                )
            now = int(time.time())
            re_id = new_id("re_")
            txn = self._available_txn(
                -amount,
                charge["currency"],
                "REFUND FOR CHARGE",
                re_id,
                now,
                type="refund",
                category="refund",
            )
            cur = charge["currency"]
            self.pending[cur] = self.pending.get(cur, 0) - amount
            refund = template("refund")
            refund.update(
                id=re_id,
                amount=amount,
                balance_transaction=txn["id"],
                charge=charge_id,
                created=now,
                currency=cur,
                metadata=_metadata(params),
                payment_intent=charge["payment_intent"],
                payment_method=charge["payment_method"],
                reason=_str(params, "reason"),
                status="succeeded",
                destination_details={
                    "card": {
                        "reference_status": "pending",
                        "reference_type": "acquirer_reference_number",
                        "type": "refund",
                    },
                    "type": "card",
                },
            )
            self.refunds[re_id] = refund
            previous = {
                "amount_refunded": charge["amount_refunded"],
                "refunded": charge["refunded"],
            }
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
            self.emit("charge.refunded", public(charge), previous)
            return refund

    def list_refunds(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            items = list(reversed(self.refunds.values()))
            for key in ("charge", "payment_intent"):
                if params.get(key):
                    items = [r for r in items if r[key] == params[key]]
            return paginate(items, params, "/v1/refunds")

    def list_payment_intents(self, params: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            items = _filter_created(
                list(reversed(self.payment_intents.values())), params.get("created")
            )
            return paginate(items, params, "/v1/payment_intents")


def public(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object without the sandbox's private ``_`` keys."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _unrefunded(charge: Mapping[str, Any]) -> int:
    """Captured minus refunded (a partial capture refunds the uncaptured rest)."""
    uncaptured = charge["amount"] - charge["amount_captured"] if charge["captured"] else 0
    return int(charge["amount_captured"] - (charge["amount_refunded"] - uncaptured))


def _as_list(value: Any, name: str) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):  # types[0]=a&types[1]=b decoded as a dict
        return [str(v) for _, v in sorted(value.items(), key=lambda kv: int(kv[0]))]
    if isinstance(value, str):
        return [value]
    raise StripeError(
        400, f"Invalid array: {name}", code="parameter_invalid", param=name, store=False
    )


def _filter_created(items: list[dict[str, Any]], created: Any) -> list[dict[str, Any]]:
    if created is None or created == "":
        return items
    if isinstance(created, str):
        created = {"eq": created}
    ops = {
        "eq": lambda a, b: a == b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    for op, raw in created.items():
        if op not in ops:
            raise StripeError(
                400,
                f"Received unknown parameter: created[{op}]",
                code="parameter_unknown",
                param=f"created[{op}]",
                store=False,
            )
        bound = _int({"created": raw}, "created")
        items = [i for i in items if ops[op](i["created"], bound)]
    return items


def paginate(
    items: Iterable[dict[str, Any]], params: Mapping[str, Any], url: str
) -> dict[str, Any]:
    """Stripe's cursor pagination over ``items`` (already newest first)."""
    items = list(items)
    limit = _int(params, "limit")
    limit = 10 if limit is None else limit
    if not 1 <= limit <= 100:
        raise StripeError(
            400,
            "This value must be less than or equal to 100 (and at least 1).",
            code="parameter_invalid_integer",
            param="limit",
            store=False,
        )
    after, before = _str(params, "starting_after"), _str(params, "ending_before")
    ids = [i["id"] for i in items]
    if after is not None:
        if after not in ids:
            raise no_such("object", after, param="starting_after", status=400)
        page = items[ids.index(after) + 1 :]
        chunk, more = page[:limit], len(page) > limit
    elif before is not None:
        if before not in ids:
            raise no_such("object", before, param="ending_before", status=400)
        page = items[: ids.index(before)]
        chunk, more = page[-limit:], len(page) > limit
    else:
        chunk, more = items[:limit], len(items) > limit
    return {"object": "list", "data": [public(i) for i in chunk], "has_more": more, "url": url}
