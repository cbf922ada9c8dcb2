"""The outbound-address policy (SPEC §9.6 rule 2), with fake resolvers: no DNS in tests."""

from __future__ import annotations

import ipaddress

import pytest

from proxy import netpolicy
from proxy.netpolicy import Policy, host_refusal, is_refused, url_refusal

STRICT = Policy()


def fixed(mapping: dict[str, list[str]]) -> netpolicy.Resolver:
    def resolve(host: str) -> list[str]:
        return mapping.get(host, [])

    return resolve


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", True),  # loopback
        ("127.255.0.9", True),
        ("10.1.2.3", True),  # RFC 1918
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # link-local, cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("100.127.255.254", True),
        ("0.0.0.0", True),  # noqa: S104 (unspecified, not a bind)
        ("224.0.0.1", True),  # multicast
        ("239.255.255.250", True),
        ("240.0.0.1", True),  # reserved
        ("255.255.255.255", True),
        ("192.0.2.10", True),  # documentation range: not global
        ("93.184.216.34", False),
        ("8.8.8.8", False),
        ("100.63.255.255", False),  # just outside CGNAT
        ("100.128.0.0", False),
        ("::1", True),  # IPv6 loopback
        ("::", True),  # unspecified
        ("fc00::1", True),  # unique local
        ("fd12:3456::1", True),
        ("fe80::1", True),  # link-local
        ("ff02::1", True),  # multicast
        ("2001:db8::1", True),  # documentation
        ("::ffff:127.0.0.1", True),  # IPv4-mapped loopback
        ("::ffff:10.0.0.1", True),
        ("64:ff9b::a00:1", True),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("2606:4700:4700::1111", False),
        ("::ffff:8.8.8.8", True),  # ::ffff:0:0/96 itself is not global
    ],
)
def test_strict_policy_refuses_every_non_public_address(address: str, refused: bool) -> None:
    assert is_refused(ipaddress.ip_address(address), STRICT) is refused


def test_allow_private_lifts_every_refusal() -> None:
    policy = Policy(allow_private=True)
    for address in ("127.0.0.1", "10.0.0.1", "::1", "169.254.169.254"):
        assert not is_refused(ipaddress.ip_address(address), policy)
    assert host_refusal("anything.invalid", policy, fixed({})) is None


def test_allowed_networks_lift_the_refusal_for_listed_networks_only() -> None:
    policy = Policy.from_settings(False, ["10.20.0.0/16", " fd00::/8 "])
    assert not is_refused(ipaddress.ip_address("10.20.1.1"), policy)
    assert not is_refused(ipaddress.ip_address("::ffff:10.20.1.1"), policy)  # mapped form too
    assert not is_refused(ipaddress.ip_address("fd00::5"), policy)
    assert is_refused(ipaddress.ip_address("10.21.0.1"), policy)
    assert is_refused(ipaddress.ip_address("127.0.0.1"), policy)


def test_host_names_are_judged_by_every_address_they_resolve_to() -> None:
    resolve = fixed(
        {
            "public.example": ["93.184.216.34", "2606:4700:4700::1111"],
            "sneaky.example": ["93.184.216.34", "127.0.0.1"],  # one bad address is enough
            "v6-loopback.example": ["::1"],
            "metadata.example": ["169.254.169.254"],
        }
    )
    assert host_refusal("public.example", STRICT, resolve) is None
    assert host_refusal("sneaky.example", STRICT, resolve) == netpolicy.PRIVATE_ADDRESS
    assert host_refusal("v6-loopback.example", STRICT, resolve) == netpolicy.PRIVATE_ADDRESS
    assert host_refusal("metadata.example", STRICT, resolve) == netpolicy.PRIVATE_ADDRESS
    assert host_refusal("nowhere.example", STRICT, resolve) == netpolicy.UNRESOLVABLE


def test_ip_literals_are_not_sent_to_the_resolver() -> None:
    def refuse_to_resolve(host: str) -> list[str]:
        raise AssertionError(f"resolver called for {host}")

    assert host_refusal("93.184.216.34", STRICT, refuse_to_resolve) is None
    assert host_refusal("[::1]", STRICT, refuse_to_resolve) == netpolicy.PRIVATE_ADDRESS
    assert host_refusal("fe80::1%eth0", STRICT, refuse_to_resolve) == netpolicy.PRIVATE_ADDRESS


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://93.184.216.34/sync", None),
        ("https://public.example:8443/x", None),
        ("http://127.0.0.1:8000", netpolicy.PRIVATE_ADDRESS),
        ("http://[::1]:8000/", netpolicy.PRIVATE_ADDRESS),
        ("http://[::ffff:192.168.0.1]/", netpolicy.PRIVATE_ADDRESS),
        ("http://user:pw@10.0.0.1/", netpolicy.PRIVATE_ADDRESS),
        ("http://LOOPBACK.example/", netpolicy.PRIVATE_ADDRESS),  # host names are case-blind
        ("http:///path-only", netpolicy.NO_HOST),
        ("http://[::1/", netpolicy.NO_HOST),  # malformed
    ],
)
def test_url_refusal_checks_the_url_host(url: str, reason: str | None) -> None:
    resolve = fixed({"public.example": ["93.184.216.34"], "loopback.example": ["127.0.0.1"]})
    assert url_refusal(url, STRICT, resolve) == reason


def test_system_resolver_resolves_numeric_forms_and_localhost_without_network() -> None:
    # Decimal and dotted-short IPv4 forms are resolved by getaddrinfo, so they are caught too.
    assert url_refusal("http://2130706433/", STRICT) == netpolicy.PRIVATE_ADDRESS
    assert url_refusal("http://127.1/", STRICT) == netpolicy.PRIVATE_ADDRESS
    assert url_refusal("http://localhost:9/", STRICT) == netpolicy.PRIVATE_ADDRESS
