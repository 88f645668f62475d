"""StripeGateway: the few Stripe calls URSUS makes, with errors classified by what to do next.

Every call goes through stripe-python's ``StripeClient`` (v1 services). Results are
turned into plain values at once (Stripe objects are not dicts). Errors become
``TransientStripeError`` (retry later with the same idempotency key) or
``PermanentStripeError`` (retrying the same request will not help); their
messages never hold a secret key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import stripe

from gateway.errors import PermanentStripeError, StripeError, TransientStripeError
from gateway.models import ChargeSnapshot, DueTransfer

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses

log = logging.getLogger(__name__)
# stripe-python logs every request and every error body at INFO on the "stripe" logger;
# an error body can echo a (masked) key. URSUS logs its own redacted line per call.
logging.getLogger("stripe").setLevel(logging.WARNING)

# Stripe's 401 message echoes a masked key ("sk_test_****1234"); mask whatever looks
# like a key, masked or not, before a message can reach a log or a dialog.
_KEY_RE = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9_*]*")
_WEBHOOK_SECRET_RE = re.compile(r"\bwhsec_[A-Za-z0-9_+/=*]*")
_MAX_MESSAGE = 500
_FIND_TRANSFER_PAGES = 10  # 1,000 transfers: a transfer group holds one or two


@dataclass(frozen=True, slots=True)
class RefundInfo:
    """One refund of a charge."""

    refund_id: str
    amount: int
    created: int
    status: str


@dataclass(frozen=True, slots=True)
class ReversalInfo:
    """One reversal of a transfer."""

    reversal_id: str
    amount: int


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Mask API keys, webhook secrets and the given secret values in ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _KEY_RE.sub("[redacted key]", text)
    return _WEBHOOK_SECRET_RE.sub("[redacted secret]", text)


class StripeGateway:
    """The Stripe calls of URSUS on one platform account."""

    def __init__(
        self,
        secret_key: str,
        api_base: str = "",
        timeout: tuple[float, float] = (5, 30),
        max_network_retries: int = 2,
    ) -> None:
        self._secret_key = secret_key
        self._api_base = api_base.rstrip("/")
        base: BaseAddresses | None = {"api": self._api_base} if self._api_base else None
        # StripeClient retries 0 times unless told (DESIGN §7); idempotency keys make
        # the retries of POSTs safe.
        self._http = stripe.RequestsClient(timeout=timeout)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses=base,
            http_client=self._http,
            max_network_retries=max_network_retries,
        )
        # ping() must answer quickly whatever the network does: its own short-timeout
        # client, no retries.
        self._ping_http = stripe.RequestsClient(timeout=(2, 5))
        self._ping_client = stripe.StripeClient(
            secret_key,
            base_addresses=base,
            http_client=self._ping_http,
            max_network_retries=0,
        )

    def __repr__(self) -> str:
        return f"StripeGateway(api_base={self._api_base or 'api.stripe.com'!r})"

    @property
    def api_base(self) -> str:
        return self._api_base

    # -- calls -------------------------------------------------------------------

    def create_payment_intent(
        self,
        amount: int,
        currency: str,
        order_id: str,
        email: str,
        description: str,
        idempotency_key: str,
    ) -> tuple[str, str]:
        """Create a PaymentIntent on the platform account; returns (id, client_secret)."""
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency.lower(),
            "metadata": {"order_id": order_id},
            "transfer_group": order_id,
            "automatic_payment_methods": {"enabled": True},
        }
        if description:
            params["description"] = description
        if email:
            params["receipt_email"] = email
        data = self._call(
            "create_payment_intent",
            lambda: self._client.v1.payment_intents.create(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            ),
        )
        return str(data["id"]), str(data.get("client_secret") or "")

    def retrieve_charge(self, charge_id: str) -> ChargeSnapshot:
        """Re-fetch a charge with its balance transaction expanded."""
        data = self._call(
            "retrieve_charge",
            lambda: self._client.v1.charges.retrieve(
                charge_id, params={"expand": ["balance_transaction"]}
            ),
        )
        try:
            return charge_snapshot(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentStripeError(
                "unexpected_response", f"charge {charge_id} could not be read: {exc!r}"
            ) from exc

    def create_transfer(self, t: DueTransfer, *, from_charge: bool = True) -> str:
        """Create the vendor transfer of a charge; returns the transfer id.

        ``from_charge=False`` pays from the platform's available balance instead of
        the charge's funds (no ``source_transaction``): the way out when Stripe
        refuses a transfer larger than what is left of a partly refunded charge.
        """
        metadata = {**t.metadata, "charge_id": t.charge_id}
        params: dict[str, Any] = {
            "amount": t.amount,
            "currency": t.currency.lower(),
            "destination": t.destination,
            "metadata": metadata,
        }
        if from_charge:
            # The transfer succeeds while the charge's funds are still pending
            # (docs.stripe.com/connect/separate-charges-and-transfers#transfer-availability).
            params["source_transaction"] = t.charge_id
        if t.transfer_group:
            params["transfer_group"] = t.transfer_group
        data = self._call(
            "create_transfer",
            lambda: self._client.v1.transfers.create(
                params,  # type: ignore[arg-type]
                options={"idempotency_key": t.idempotency_key},
            ),
        )
        return str(data["id"])

    def find_transfer(self, transfer_group: str, charge_id: str) -> str | None:
        """The id of a transfer already made for ``charge_id``, or None."""
        params: dict[str, Any] = {"limit": 100}
        if transfer_group:
            params["transfer_group"] = transfer_group
        for _ in range(_FIND_TRANSFER_PAGES):
            page = self._call(
                "find_transfer",
                lambda p=dict(params): self._client.v1.transfers.list(p),  # type: ignore[misc]
            )
            items = page.get("data") or []
            for item in items:
                metadata = item.get("metadata") or {}
                source = item.get("source_transaction")
                if isinstance(source, Mapping):
                    source = source.get("id")
                if metadata.get("charge_id") == charge_id or source == charge_id:
                    return str(item["id"])
            if not page.get("has_more") or not items:
                return None
            params["starting_after"] = items[-1]["id"]
        log.warning(
            "find_transfer gave up after %d pages charge=%s", _FIND_TRANSFER_PAGES, charge_id
        )
        return None

    def list_events(
        self,
        types: Sequence[str],
        *,
        delivery_success: bool | None = None,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of events, newest first: (events as plain dicts, has_more).

        Stripe keeps events for 30 days; ``delivery_success=False`` lists those whose
        webhook delivery has not succeeded (docs.stripe.com/api/events/list).
        """
        params: dict[str, Any] = {"limit": limit, "types": list(types)}
        if delivery_success is not None:
            params["delivery_success"] = delivery_success
        if starting_after:
            params["starting_after"] = starting_after
        page = self._call(
            "list_events",
            lambda: self._client.v1.events.list(params),  # type: ignore[arg-type]
        )
        return list(page.get("data") or []), bool(page.get("has_more"))

    def create_reversal(self, transfer_id: str, amount: int, idempotency_key: str) -> str:
        """Reverse ``amount`` of a transfer; returns the reversal id."""
        data = self._call(
            "create_reversal",
            lambda: self._client.v1.transfers.reversals.create(
                transfer_id,
                params={"amount": amount},
                options={"idempotency_key": idempotency_key},
            ),
        )
        return str(data["id"])

    def list_reversals(self, transfer_id: str) -> list[ReversalInfo]:
        """Every reversal of a transfer (to reconcile before reversing more)."""
        result: list[ReversalInfo] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self._call(
                "list_reversals",
                lambda p=dict(params): self._client.v1.transfers.reversals.list(  # type: ignore[misc]
                    transfer_id, p
                ),
            )
            items = page.get("data") or []
            result.extend(ReversalInfo(str(i["id"]), int(i["amount"])) for i in items)
            if not page.get("has_more") or not items:
                return result
            params["starting_after"] = items[-1]["id"]

    def list_refunds(self, charge_id: str) -> list[RefundInfo]:
        """Every refund of a charge, oldest first."""
        result: list[RefundInfo] = []
        params: dict[str, Any] = {"charge": charge_id, "limit": 100}
        while True:
            page = self._call(
                "list_refunds",
                lambda p=dict(params): self._client.v1.refunds.list(p),  # type: ignore[misc]
            )
            items = page.get("data") or []
            result.extend(
                RefundInfo(
                    refund_id=str(i["id"]),
                    amount=int(i["amount"]),
                    created=int(i.get("created") or 0),
                    status=str(i.get("status") or ""),
                )
                for i in items
            )
            if not page.get("has_more") or not items:
                break
            params["starting_after"] = items[-1]["id"]
        result.sort(key=lambda r: (r.created, r.refund_id))
        return result

    def retrieve_account(self, account_id: str) -> dict[str, Any]:
        """The connected account's id, names, email and whether it can be paid."""
        data = self._call("retrieve_account", lambda: self._client.v1.accounts.retrieve(account_id))
        profile = data.get("business_profile") or {}
        settings = data.get("settings") or {}
        dashboard = settings.get("dashboard") or {}
        name = str(profile.get("name") or dashboard.get("display_name") or "")
        return {
            "id": str(data.get("id") or account_id),
            "business_name": name,
            # Stripe's own shape too, for readers that look there (the desktop's test).
            "business_profile": {"name": name},
            "email": str(data.get("email") or profile.get("support_email") or ""),
            "charges_enabled": bool(data.get("charges_enabled")),
            "payouts_enabled": bool(data.get("payouts_enabled")),
            "livemode": bool(data.get("livemode", False)),
        }

    def ping(self) -> bool:
        """True if Stripe answers with this key (a balance read); never raises."""
        try:
            self._ping_client.v1.balance.retrieve()
        except stripe.PermissionError:
            return True  # a restricted key without balance access: Stripe answered, key valid
        except Exception as exc:  # never raises: it only informs a status light
            log.info("stripe ping failed: %s", redact(type(exc).__name__))
            return False
        return True

    def close(self) -> None:
        """Close this thread's HTTP sessions."""
        self._http.close()
        self._ping_http.close()

    # -- plumbing ----------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], Any]) -> dict[str, Any]:
        try:
            result = fn()
        except stripe.StripeError as exc:
            raise self._classify(what, exc) from None
        return to_plain(result)

    def _classify(self, what: str, exc: stripe.StripeError) -> StripeError:
        """Map a stripe-python exception to Transient/Permanent, with a redacted message."""
        status = exc.http_status
        error = exc.error
        code = str(exc.code or (error.code if error is not None else None) or "")
        raw = exc.user_message or ""
        if isinstance(exc, stripe.APIConnectionError):
            # The network detail (refused, timeout) is what helps the owner; drop
            # Stripe's support boilerplate.
            detail = raw.split("(Network error:", 1)[-1].rstrip(") \n")
            message = f"Stripe unreachable: {detail.strip()}" if detail else "Stripe unreachable"
            code = code or "network_error"
        else:
            message = raw or type(exc).__name__
        message = redact(message, (self._secret_key,))[:_MAX_MESSAGE]
        transient = (
            isinstance(exc, (stripe.APIConnectionError, stripe.RateLimitError))
            # 409: a request with this idempotency key is still running at Stripe
            # (e.g. after a crash); lock_timeout: a concurrent update. Both clear up.
            or status in (409, 429)
            or code in ("idempotency_key_in_use", "lock_timeout", "rate_limit")
            or (status is not None and status >= 500)
            # An unreadable answer (a proxy's HTML page): the request may have
            # worked; retrying with the same idempotency key is the safe choice.
            or (type(exc) is stripe.APIError and status is None)
        )
        cls = TransientStripeError if transient else PermanentStripeError
        err = cls(code or f"http_{status}", message, status)
        log.info(
            "stripe %s failed: %s status=%s code=%s",
            what,
            "transient" if transient else "permanent",
            status,
            err.code,
        )
        return err


def to_plain(value: Any) -> Any:
    """A StripeObject (or list of them) as plain dicts and lists."""
    if isinstance(value, stripe.StripeObject):
        return value.to_dict()
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value


def charge_snapshot(data: Mapping[str, Any]) -> ChargeSnapshot:
    """Read a charge (plain dict, balance_transaction expanded or not) into a snapshot."""
    charge_id = str(data["id"])
    if not charge_id.startswith(("ch_", "py_")):
        raise ValueError(f"not a charge id: {charge_id!r}")
    metadata = data.get("metadata") or {}
    payment_intent = data.get("payment_intent")
    if isinstance(payment_intent, Mapping):
        payment_intent = payment_intent.get("id")
    balance = data.get("balance_transaction")
    balance_id = ""
    actual_fee: int | None = None
    if isinstance(balance, Mapping):
        balance_id = str(balance.get("id") or "")
        fee = balance.get("fee")
        # A balance transaction without a fee field is "not known", never fee 0.
        if fee is not None and not isinstance(fee, bool):
            actual_fee = int(fee)
    elif isinstance(balance, str):
        # Not expanded: the fee is unknown here even though it exists.
        balance_id = balance
    amount = data["amount"]
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError("charge amount is not an integer")
    captured_amount = data.get("amount_captured")
    if (
        data.get("captured")
        and isinstance(captured_amount, int)
        and not isinstance(captured_amount, bool)
        and 0 < captured_amount < amount
    ):
        # A partial capture: the sale is what was captured (the balance transaction
        # and its fee are for that amount; Stripe releases the rest).
        amount = captured_amount
    return ChargeSnapshot(
        charge_id=charge_id,
        payment_intent_id=str(payment_intent or ""),
        order_id=str(metadata.get("order_id") or ""),
        currency=str(data["currency"]).lower(),
        amount=amount,
        amount_refunded=int(data.get("amount_refunded") or 0),
        captured=bool(data.get("captured")),
        paid=bool(data.get("paid")),
        status=str(data.get("status") or ""),
        created=int(data.get("created") or 0),
        livemode=bool(data.get("livemode")),
        transfer_group=str(data.get("transfer_group") or ""),
        balance_transaction_id=balance_id,
        actual_fee=actual_fee,
    )
