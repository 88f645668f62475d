"""FakeStripe: an in-process stand-in for StripeGateway, with scripted failures.

It keeps charges, transfers, reversals and refunds in memory and enforces the
Stripe rules that catch a double payment: idempotency keys replay (same params)
or refuse (different params), and transfers from one ``source_transaction`` can
never add up to more than the charge.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gateway.errors import PermanentStripeError, StripeError, TransientStripeError
from gateway.models import ChargeSnapshot, DueTransfer
from gateway.stripe_api import RefundInfo, ReversalInfo

ACCOUNT = "acct_test1234567"


@dataclass
class FakeTransfer:
    transfer_id: str
    amount: int
    currency: str
    destination: str
    source_transaction: str
    transfer_group: str
    metadata: dict[str, str]
    idempotency_key: str
    amount_reversed: int = 0


def transient(code: str = "http_500", status: int | None = 500) -> TransientStripeError:
    return TransientStripeError(code, "Something went wrong on Stripe's end", status)


def in_use() -> TransientStripeError:
    return TransientStripeError(
        "idempotency_key_in_use",
        "There is currently another in-progress request using this Idempotent Key",
        409,
    )


def network() -> TransientStripeError:
    return TransientStripeError("network_error", "Stripe unreachable: ConnectionError", None)


def permanent(code: str = "balance_insufficient", status: int = 400) -> PermanentStripeError:
    return PermanentStripeError(code, f"Stripe says no ({code})", status)


class FakeStripe:
    """Implements the StripeGateway methods the processor uses, on in-memory state."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.charges: dict[str, ChargeSnapshot] = {}
        self.transfers: dict[str, FakeTransfer] = {}
        self.reversals: dict[str, list[ReversalInfo]] = {}
        self.refunds: dict[str, list[RefundInfo]] = {}
        self.calls: list[tuple[str, str]] = []  # (method, main argument)
        self._keys: dict[str, tuple[str, str]] = {}  # idempotency key -> (params, result id)
        self._failures: dict[str, deque[tuple[Exception, bool]]] = {}
        self._ids = itertools.count(1)

    # -- test set-up ---------------------------------------------------------------------

    def fail(self, method: str, *errors: Exception, after: bool = False) -> None:
        """The next calls of ``method`` raise ``errors`` in turn.

        ``after=True``: the call takes effect at Stripe first and then raises (the
        answer was lost on the way back).
        """
        with self.lock:
            self._failures.setdefault(method, deque()).extend((e, after) for e in errors)

    def add_charge(
        self,
        charge_id: str | None = None,
        amount: int = 10000,
        currency: str = "usd",
        *,
        captured: bool = True,
        paid: bool = True,
        fee: int | None = None,
        order_id: str = "order-1",
        status: str = "succeeded",
        created: int | None = None,
    ) -> str:
        with self.lock:
            charge_id = charge_id or f"ch_fake{next(self._ids)}"
            self.charges[charge_id] = ChargeSnapshot(
                charge_id=charge_id,
                payment_intent_id=f"pi_for_{charge_id}",
                order_id=order_id,
                currency=currency,
                amount=amount,
                amount_refunded=0,
                captured=captured,
                paid=paid,
                status=status,
                created=int(self.clock()) if created is None else created,
                livemode=False,
                transfer_group=order_id,
                balance_transaction_id="txn_" + charge_id if fee is not None else "",
                actual_fee=fee,
            )
            return charge_id

    def set_fee(self, charge_id: str, fee: int) -> None:
        with self.lock:
            self.charges[charge_id] = replace(
                self.charges[charge_id], actual_fee=fee, balance_transaction_id="txn_" + charge_id
            )

    def capture(self, charge_id: str) -> None:
        with self.lock:
            self.charges[charge_id] = replace(self.charges[charge_id], captured=True)

    def refund(self, charge_id: str, amount: int) -> str:
        with self.lock:
            charge = self.charges[charge_id]
            refund_id = f"re_fake{next(self._ids)}"
            self.refunds.setdefault(charge_id, []).append(
                RefundInfo(refund_id, amount, int(self.clock()), "succeeded")
            )
            self.charges[charge_id] = replace(
                charge, amount_refunded=charge.amount_refunded + amount
            )
            return refund_id

    def add_transfer(self, charge_id: str, amount: int, transfer_group: str = "") -> str:
        """A transfer that exists at Stripe without URSUS knowing (e.g. made before a crash)."""
        with self.lock:
            transfer_id = f"tr_fake{next(self._ids)}"
            self.transfers[transfer_id] = FakeTransfer(
                transfer_id, amount, "usd", ACCOUNT, charge_id, transfer_group,
                {"charge_id": charge_id}, "",
            )  # fmt: skip
            return transfer_id

    def transfers_for(self, charge_id: str) -> list[FakeTransfer]:
        with self.lock:
            return [t for t in self.transfers.values() if t.source_transaction == charge_id]

    def count(self, method: str) -> int:
        with self.lock:
            return sum(1 for m, _ in self.calls if m == method)

    # -- plumbing --------------------------------------------------------------------------

    def _enter(self, method: str, arg: str) -> tuple[Exception, bool] | None:
        self.calls.append((method, arg))
        queue = self._failures.get(method)
        if queue:
            error, after = queue.popleft()
            if not after:
                raise error
            return error, after
        return None

    def _idempotent(self, key: str, params: dict[str, Any], make: Callable[[], str]) -> str:
        blob = json.dumps(params, sort_keys=True)
        if key in self._keys:
            seen_params, result = self._keys[key]
            if seen_params != blob:
                raise PermanentStripeError(
                    "",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                    400,
                )
            return result
        result = make()
        self._keys[key] = (blob, result)
        return result

    # -- StripeGateway methods -------------------------------------------------------------

    def retrieve_charge(self, charge_id: str) -> ChargeSnapshot:
        with self.lock:
            pending = self._enter("retrieve_charge", charge_id)
            charge = self.charges.get(charge_id)
            if charge is None:
                raise PermanentStripeError(
                    "resource_missing", f"No such charge: '{charge_id}'", 404
                )
            if pending:
                raise pending[0]
            return charge

    def create_transfer(self, t: DueTransfer, *, from_charge: bool = True) -> str:
        with self.lock:
            pending = self._enter("create_transfer", t.charge_id)
            metadata = {**t.metadata, "charge_id": t.charge_id}
            params: dict[str, Any] = {
                "amount": t.amount,
                "currency": t.currency,
                "destination": t.destination,
                "source_transaction": t.charge_id if from_charge else None,
                "transfer_group": t.transfer_group,
                "metadata": metadata,
            }

            def make() -> str:
                charge = self.charges.get(t.charge_id)
                if charge is None or not charge.captured:
                    raise PermanentStripeError("charge_not_captured", "not captured", 400)
                if t.amount < 1:
                    raise PermanentStripeError("parameter_invalid_integer", "amount < 1", 400)
                left = (
                    charge.amount
                    - charge.amount_refunded
                    - sum(x.amount - x.amount_reversed for x in self.transfers_for(t.charge_id))
                )
                if from_charge and t.amount > left:
                    raise PermanentStripeError(
                        "amount_too_large", "The transfer amount exceeds the amount left", 400
                    )
                transfer_id = f"tr_fake{next(self._ids)}"
                source = t.charge_id if from_charge else ""
                self.transfers[transfer_id] = FakeTransfer(
                    transfer_id, t.amount, t.currency, t.destination, source,
                    t.transfer_group, metadata, t.idempotency_key,
                )  # fmt: skip
                return transfer_id

            result = self._idempotent(t.idempotency_key, params, make)
            if pending:
                raise pending[0]
            return result

    def find_transfer(self, transfer_group: str, charge_id: str) -> str | None:
        with self.lock:
            pending = self._enter("find_transfer", charge_id)
            if pending:
                raise pending[0]
            for t in self.transfers.values():
                if transfer_group and t.transfer_group != transfer_group:
                    continue
                if t.metadata.get("charge_id") == charge_id or t.source_transaction == charge_id:
                    return t.transfer_id
            return None

    def create_reversal(self, transfer_id: str, amount: int, idempotency_key: str) -> str:
        with self.lock:
            pending = self._enter("create_reversal", transfer_id)

            def make() -> str:
                transfer = self.transfers[transfer_id]
                if amount < 1 or amount > transfer.amount - transfer.amount_reversed:
                    raise PermanentStripeError("amount_too_large", "too much reversed", 400)
                transfer.amount_reversed += amount
                reversal_id = f"trr_fake{next(self._ids)}"
                self.reversals.setdefault(transfer_id, []).append(ReversalInfo(reversal_id, amount))
                return reversal_id

            result = self._idempotent(
                idempotency_key, {"transfer": transfer_id, "amount": amount}, make
            )
            if pending:
                raise pending[0]
            return result

    def list_reversals(self, transfer_id: str) -> list[ReversalInfo]:
        with self.lock:
            pending = self._enter("list_reversals", transfer_id)
            if pending:
                raise pending[0]
            return list(self.reversals.get(transfer_id, []))

    def list_refunds(self, charge_id: str) -> list[RefundInfo]:
        with self.lock:
            pending = self._enter("list_refunds", charge_id)
            if pending:
                raise pending[0]
            return list(self.refunds.get(charge_id, []))

    def create_payment_intent(
        self,
        amount: int,
        currency: str,
        order_id: str,
        email: str,
        description: str,
        idempotency_key: str,
    ) -> tuple[str, str]:
        with self.lock:
            pending = self._enter("create_payment_intent", order_id)
            params = {"amount": amount, "currency": currency, "order_id": order_id}
            pi = self._idempotent(idempotency_key, params, lambda: f"pi_fake{next(self._ids)}")
            if pending:
                raise pending[0]
            return pi, f"{pi}_secret_fake"

    def retrieve_account(self, account_id: str) -> dict[str, Any]:
        with self.lock:
            pending = self._enter("retrieve_account", account_id)
            if pending:
                raise pending[0]
            return {
                "id": account_id,
                "business_name": "Fake Vendor",
                "email": "vendor@example.com",
                "charges_enabled": True,
                "payouts_enabled": True,
                "livemode": False,
            }

    def ping(self) -> bool:
        with self.lock:
            try:
                pending = self._enter("ping", "")
            except StripeError:
                return False
            return pending is None


def make_event(
    event_id: str,
    type_: str,
    object_id: str,
    *,
    obj: dict[str, Any] | None = None,
    created: int = 1_700_000_000,
) -> bytes:
    """The raw body of a Stripe event about ``object_id`` (only what the processor reads)."""
    data_object = {"id": object_id, "object": "charge" if object_id.startswith("ch_") else "x"}
    data_object.update(obj or {})
    payload = {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": created,
        "livemode": False,
        "type": type_,
        "data": {"object": data_object},
    }
    return json.dumps(payload).encode()
