"""Check recorded Stripe requests against Stripe's spec (tests/data/stripe_spec_extract.json).

``problems(recorded)`` takes the sandbox's ``state.requests`` (or any
iterable of objects/dicts/tuples with method, path and param names) and
lists every path/method Stripe does not define and every parameter it does
not allow (checked by top-level name: ``metadata[order_id]`` -> ``metadata``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

EXTRACT = Path(__file__).parent / "data" / "stripe_spec_extract.json"


@cache
def spec() -> dict[str, dict[str, frozenset[str]]]:
    paths = json.loads(EXTRACT.read_text(encoding="utf-8"))["paths"]
    return {p: {m: frozenset(n) for m, n in ms.items()} for p, ms in paths.items()}


@cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    out = []
    for template in spec():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        out.append((re.compile(f"^{pattern}$"), template))
    # Literal segments win over placeholders: fewer placeholders first.
    out.sort(key=lambda item: item[1].count("{"))
    return out


def template_for(path: str) -> str | None:
    """``/v1/charges/ch_123`` -> ``/v1/charges/{charge}`` (None if Stripe has no such path)."""
    for pattern, template in _templates():
        if pattern.match(path):
            return template
    return None


def top_level(name: str) -> str:
    return name.split("[", 1)[0]


def _fields(req: Any) -> tuple[str, str, Iterable[str]]:
    if isinstance(req, Mapping):
        return req["method"], req["path"], req["params"]
    if isinstance(req, tuple):
        return req[0], req[1], req[2]
    return req.method, req.path, req.params


def problems(recorded_requests: Iterable[Any]) -> list[str]:
    """Human-readable contract violations, one per offending path or parameter."""
    found: list[str] = []
    for req in recorded_requests:
        method, path, params = _fields(req)
        method = method.upper()
        template = template_for(path.split("?", 1)[0])
        if template is None:
            found.append(f"{method} {path}: path not in Stripe's spec")
            continue
        allowed = spec()[template].get(method)
        if allowed is None:
            found.append(f"{method} {path}: method not allowed on {template}")
            continue
        for name in dict.fromkeys(top_level(p) for p in params):
            if name not in allowed:
                found.append(f"{method} {template}: unknown parameter {name!r}")
    return found
