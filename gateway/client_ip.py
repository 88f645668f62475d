"""The client's address behind trusted proxies (the Cloudflare tunnel, a local reverse proxy).

Forwarding headers are believed only when the TCP peer is a trusted proxy:
anyone else can write any ``X-Forwarded-For`` they like, and rate limits and
fail2ban bans keyed on a forged address would be useless.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CF_CONNECTING_IP = "CF-Connecting-IP"
X_FORWARDED_FOR = "X-Forwarded-For"
# A forwarding header longer than this is junk, not a proxy chain.
MAX_HEADER_LEN = 2048


class HeaderLookup(Protocol):
    """Anything with a case-insensitive ``get`` (werkzeug's headers, a dict in tests)."""

    def get(self, key: str, /) -> str | None: ...


class TrustedProxies:
    """A parsed set of trusted proxy addresses and CIDR networks."""

    __slots__ = ("_exact", "_networks")

    def __init__(self, entries: Iterable[str]) -> None:
        exact: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            if "/" in entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                exact.add(str(_canonical(ipaddress.ip_address(entry))))
        self._exact = frozenset(exact)
        self._networks = tuple(networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        # Fast path: most peers are compared as strings, no parsing.
        if address in self._exact:
            return True
        canonical = normalise(address)
        if canonical is None:
            return False
        if canonical in self._exact:  # e.g. ::ffff:127.0.0.1, or a non-canonical IPv6
            return True
        parsed = ipaddress.ip_address(canonical)
        return any(parsed in net for net in self._networks)

    def __repr__(self) -> str:
        entries = sorted(self._exact) + [str(n) for n in self._networks]
        return f"TrustedProxies({entries!r})"


@functools.lru_cache(maxsize=32)
def trusted_proxies(entries: tuple[str, ...]) -> TrustedProxies:
    """Parsed (and cached) trusted proxies; raises ValueError on a malformed entry."""
    return TrustedProxies(entries)


def _parse_ip(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _canonical(address: IPAddress) -> IPAddress:
    # An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise(value: str) -> str | None:
    """A header's address in canonical form, or None if it is not one.

    Accepts ``1.2.3.4``, ``::1``, and the port-suffixed ``1.2.3.4:80`` /
    ``[::1]:80`` some proxies write.
    """
    value = value.strip()
    parsed = _parse_ip(value)
    if parsed is None:
        if value.startswith("["):
            host, sep, _ = value[1:].partition("]")
            parsed = _parse_ip(host) if sep else None
        elif value.count(":") == 1:
            parsed = _parse_ip(value.partition(":")[0])
        if parsed is None:
            return None
    return str(_canonical(parsed))


def client_ip(
    remote_addr: str | None,
    headers: HeaderLookup,
    trusted: TrustedProxies | Iterable[str],
) -> str:
    """The address to rate-limit and log for this request.

    Only when the TCP peer is trusted: ``CF-Connecting-IP`` if valid, else the
    right-most address of ``X-Forwarded-For`` that is not itself a trusted proxy.
    Otherwise (or when the headers are absent or invalid) the peer itself.
    """
    peer = remote_addr or ""
    if not isinstance(trusted, TrustedProxies):
        trusted = trusted_proxies(tuple(trusted))
    if peer not in trusted:
        return peer
    cf = headers.get(CF_CONNECTING_IP)
    if cf and len(cf) <= MAX_HEADER_LEN:
        address = normalise(cf)
        if address is not None:
            return address
    forwarded = headers.get(X_FORWARDED_FOR)
    if forwarded and len(forwarded) <= MAX_HEADER_LEN:
        hops = forwarded.split(",")
        # Right to left: each trusted proxy appended the address it saw, so the
        # first untrusted hop is the client; anything left of it is hearsay.
        leftmost_trusted = None
        for hop in reversed(hops):
            address = normalise(hop)
            if address is None:
                # A garbled chain: believe none of it.
                return peer
            if address not in trusted:
                return address
            leftmost_trusted = address
        if leftmost_trusted is not None:
            return leftmost_trusted
    return peer
