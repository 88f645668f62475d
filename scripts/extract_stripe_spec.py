"""Derive the small Stripe reference files URSUS commits from ../shared/stripe.

``tests/data/stripe_spec_extract.json``: for every path + method URSUS or the
sandbox serves, the allowed top-level parameter names (query parameters and
form-body properties) from Stripe's OpenAPI spec. ``tests/stripe_contract.py``
checks recorded requests against it.

``--fixtures`` also rewrites ``gateway/sandbox/fixtures/objects.json``: the
example objects the sandbox copies its response shapes from, taken from
Stripe's ``fixtures3.json`` and stripped of fields that make no sense for a
card payment (sources, example destinations, fake receipt URLs).

Usage: .venv/bin/python scripts/extract_stripe_spec.py [--fixtures]
(needs pyyaml; the project itself never needs ../shared at run time).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "stripe"
SPEC = SHARED / "spec3.2023-09-12.yaml"
FIXTURES = SHARED / "fixtures3.json"
OUT_SPEC = REPO / "tests" / "data" / "stripe_spec_extract.json"
OUT_FIXTURES = REPO / "gateway" / "sandbox" / "fixtures" / "objects.json"
# The sandbox's own copy of the allowed names (it must run without tests/).
OUT_PARAMS = REPO / "gateway" / "sandbox" / "fixtures" / "params.json"

# Path templates exactly as the spec spells them, and the methods URSUS uses.
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "/v1/payment_intents": ("get", "post"),
    "/v1/payment_intents/{intent}": ("get", "post"),
    "/v1/payment_intents/{intent}/confirm": ("post",),
    "/v1/payment_intents/{intent}/capture": ("post",),
    "/v1/payment_intents/{intent}/cancel": ("post",),
    "/v1/charges/{charge}": ("get",),
    "/v1/balance_transactions/{id}": ("get",),
    "/v1/transfers": ("get", "post"),
    "/v1/transfers/{transfer}": ("get",),
    "/v1/transfers/{id}/reversals": ("get", "post"),
    "/v1/refunds": ("get", "post"),
    "/v1/refunds/{refund}": ("get",),
    "/v1/events": ("get",),
    "/v1/events/{id}": ("get",),
    "/v1/accounts/{account}": ("get",),
    "/v1/balance": ("get",),
}

FIXTURE_TYPES = (
    "payment_intent",
    "charge",
    "balance_transaction",
    "transfer",
    "transfer_reversal",
    "refund",
    "event",
    "account",
    "balance",
)


def extract_spec(spec: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """{path template: {METHOD: sorted allowed top-level parameter names}}."""
    out: dict[str, dict[str, list[str]]] = {}
    for path, methods in ENDPOINTS.items():
        item = spec["paths"][path]
        for method in methods:
            op = item[method]
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            form = (
                op.get("requestBody", {})
                .get("content", {})
                .get("application/x-www-form-urlencoded", {})
                .get("schema", {})
                .get("properties", {})
            )
            names.update(form)
            out.setdefault(path, {})[method.upper()] = sorted(names)
    return out


def clean_fixtures(resources: dict[str, Any]) -> dict[str, Any]:
    """Stripe's examples, with example-only noise set to what a card payment has."""
    objs = {name: resources[name] for name in FIXTURE_TYPES}
    charge = objs["charge"]
    charge.pop("source", None)
    charge.pop("refunds", None)  # not included since API 2022-11-15
    charge.update(
        transfer_data=None,
        shipping=None,
        receipt_url=None,
        billing_details=None,
        payment_method_details=None,
        captured=True,
        status="succeeded",
    )
    charge["outcome"] = {
        "network_status": "approved_by_network",
        "reason": None,
        "risk_level": "normal",
        "seller_message": "Payment complete.",
        "type": "authorized",
    }
    pi = objs["payment_intent"]
    pi.update(
        canceled_at=None,
        last_payment_error=None,
        next_action=None,
        processing=None,
        transfer_data=None,
        shipping=None,
        payment_method_configuration_details=None,
        amount_details=None,
        managed_payments=None,
    )
    objs["event"]["data"] = {"object": {}}
    objs["event"]["api_version"] = "2024-06-20"
    return objs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", action="store_true", help="also rewrite sandbox fixtures")
    args = parser.parse_args()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(SPEC.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - safe loader
    data = {
        "source": f"{SPEC.name} (github.com/stripe/openapi, MIT), info.version "
        f"{spec['info']['version']}",
        "paths": extract_spec(spec),
    }
    for out in (OUT_SPEC, OUT_PARAMS):
        out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {out.relative_to(REPO)}")
    if args.fixtures:
        resources = json.loads(FIXTURES.read_text(encoding="utf-8"))["resources"]
        OUT_FIXTURES.write_text(
            json.dumps(clean_fixtures(resources), indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        print(f"wrote {OUT_FIXTURES.relative_to(REPO)}")


if __name__ == "__main__":
    main()
