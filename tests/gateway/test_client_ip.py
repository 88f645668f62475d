"""client_ip(): forwarding headers are believed only from trusted proxies."""

from __future__ import annotations

import pytest

from gateway.client_ip import TrustedProxies, client_ip, normalise, trusted_proxies

LOOPBACK = ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("peer", "headers", "trusted", "expected"),
    [
        # Untrusted peer: headers are ignored whatever they say.
        ("203.0.113.9", {"X-Forwarded-For": "1.1.1.1"}, LOOPBACK, "203.0.113.9"),
        ("203.0.113.9", {"CF-Connecting-IP": "1.1.1.1"}, LOOPBACK, "203.0.113.9"),
        # Trusted peer without headers: the peer itself.
        ("127.0.0.1", {}, LOOPBACK, "127.0.0.1"),
        ("::1", {}, LOOPBACK, "::1"),
        # CF-Connecting-IP wins over X-Forwarded-For.
        (
            "127.0.0.1",
            {"CF-Connecting-IP": "198.51.100.4", "X-Forwarded-For": "1.1.1.1"},
            LOOPBACK,
            "198.51.100.4",
        ),
        ("127.0.0.1", {"CF-Connecting-IP": " 2001:db8::7 "}, LOOPBACK, "2001:db8::7"),
        # Invalid CF-Connecting-IP: fall back to X-Forwarded-For.
        (
            "127.0.0.1",
            {"CF-Connecting-IP": "not-an-ip", "X-Forwarded-For": "198.51.100.4"},
            LOOPBACK,
            "198.51.100.4",
        ),
        # Right-most untrusted hop; the client-written left part is ignored.
        ("127.0.0.1", {"X-Forwarded-For": "6.6.6.6, 198.51.100.4"}, LOOPBACK, "198.51.100.4"),
        (
            "127.0.0.1",
            {"X-Forwarded-For": "6.6.6.6, 198.51.100.4, 10.0.0.2"},
            ("127.0.0.1", "10.0.0.0/8"),
            "198.51.100.4",
        ),
        # Every hop trusted: the left-most one.
        (
            "127.0.0.1",
            {"X-Forwarded-For": "10.0.0.3, 10.0.0.2"},
            ("127.0.0.0/8", "10.0.0.0/8"),
            "10.0.0.3",
        ),
        # Garbage in the chain: believe none of it.
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.4, bogus"}, LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", {"X-Forwarded-For": ""}, LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", {"X-Forwarded-For": "1.2.3.4\n5.6.7.8"}, LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", {"X-Forwarded-For": "1.1.1.1," * 2000}, LOOPBACK, "127.0.0.1"),
        # Port-suffixed forms some proxies write.
        ("127.0.0.1", {"X-Forwarded-For": "198.51.100.4:5123"}, LOOPBACK, "198.51.100.4"),
        ("127.0.0.1", {"X-Forwarded-For": "[2001:db8::1]:443"}, LOOPBACK, "2001:db8::1"),
        # CIDR trust, IPv4-mapped IPv6 peers.
        ("10.1.2.3", {"CF-Connecting-IP": "198.51.100.4"}, ("10.0.0.0/8",), "198.51.100.4"),
        ("11.1.2.3", {"CF-Connecting-IP": "198.51.100.4"}, ("10.0.0.0/8",), "11.1.2.3"),
        ("::ffff:127.0.0.1", {"CF-Connecting-IP": "198.51.100.4"}, LOOPBACK, "198.51.100.4"),
        # No trusted proxies at all.
        ("127.0.0.1", {"CF-Connecting-IP": "198.51.100.4"}, (), "127.0.0.1"),
        # No peer (should not happen under waitress).
        (None, {"CF-Connecting-IP": "198.51.100.4"}, LOOPBACK, ""),
    ],
)
def test_client_ip(
    peer: str | None, headers: dict[str, str], trusted: tuple[str, ...], expected: str
) -> None:
    assert client_ip(peer, headers, trusted) == expected


def test_trusted_proxies_membership_and_cache() -> None:
    proxies = trusted_proxies(("127.0.0.1", "::1", "192.168.0.0/16"))
    assert "127.0.0.1" in proxies
    assert "0:0:0:0:0:0:0:1" in proxies  # non-canonical spelling of ::1
    assert "192.168.44.1" in proxies
    assert "192.169.0.1" not in proxies
    assert "garbage" not in proxies
    assert None not in proxies
    assert trusted_proxies(("127.0.0.1", "::1", "192.168.0.0/16")) is proxies


def test_malformed_trusted_entry_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        TrustedProxies(["127.0.0.1", "localhost"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("::FFFF:1.2.3.4", "1.2.3.4"),
        ("2001:DB8::1", "2001:db8::1"),
        ("1.2.3.4:80", "1.2.3.4"),
        ("[::1]:80", "::1"),
        ("[::1", None),
        ("1.2.3", None),
        ("", None),
        ("unknown", None),
    ],
)
def test_normalise(value: str, expected: str | None) -> None:
    assert normalise(value) == expected
