"""Drive one sale like a real customer: the gateway creates the intent, the card pays."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests
import stripe

if TYPE_CHECKING:
    from gateway.sandbox.server import SandboxServer


class SimulationError(RuntimeError):
    """The gateway or the sandbox refused a step of the simulated sale."""


@dataclass(frozen=True, slots=True)
class SimulatedSale:
    """The ids a simulated sale produced."""

    order_id: str
    payment_intent_id: str
    charge_id: str
    client_secret: str
    amount: int
    currency: str
    captured: bool


def simulate_payment(
    gateway_url: str,
    api_key: str,
    sandbox: SandboxServer | str,
    secret_key: str,
    amount: int,
    currency: str = "usd",
    order_id: str | None = None,
    capture: bool = True,
    *,
    payment_method: str = "pm_card_visa",
    timeout: float = 10.0,
) -> SimulatedSale:
    """POST /create-payment-intent to the gateway, then confirm the intent at the sandbox.

    ``capture=False`` confirms with ``capture_method=manual`` (an authorisation
    only); capture it later with ``client.v1.payment_intents.capture``.
    """
    order = order_id or f"order_{uuid.uuid4().hex[:12]}"
    base = sandbox if isinstance(sandbox, str) else sandbox.url
    try:
        resp = requests.post(
            f"{gateway_url.rstrip('/')}/create-payment-intent",
            json={"amount": amount, "currency": currency, "order_id": order},
            headers={"X-API-Key": api_key},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise SimulationError(f"gateway at {gateway_url} unreachable: {exc}") from exc
    if resp.status_code != 200:
        raise SimulationError(
            f"gateway refused create-payment-intent: {resp.status_code} {resp.text[:300]}"
        )
    body = resp.json()
    pi_id, client_secret = body["payment_intent_id"], body["client_secret"]
    client = stripe.StripeClient(
        secret_key,
        base_addresses={"api": base},
        http_client=stripe.RequestsClient(timeout=(5, 30)),
        max_network_retries=2,
    )
    params: dict[str, str] = {"payment_method": payment_method}
    if not capture:
        params["capture_method"] = "manual"
    try:
        pi = client.v1.payment_intents.confirm(pi_id, params=params)  # type: ignore[arg-type]
    except stripe.StripeError as exc:
        raise SimulationError(f"sandbox refused to confirm {pi_id}: {exc}") from exc
    return SimulatedSale(
        order_id=order,
        payment_intent_id=pi.id,
        charge_id=str(pi.latest_charge),
        client_secret=client_secret,
        amount=amount,
        currency=currency.lower(),
        captured=pi.status == "succeeded",
    )
