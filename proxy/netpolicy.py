"""Outbound-address policy (SSRF, SPEC §9.6 rule 2): which addresses the proxy may call.

Refused: loopback, private (RFC 1918, ``fc00::/7``), link-local (incl. cloud
metadata), carrier-grade NAT, unspecified, multicast and reserved addresses,
also when wrapped in IPv6 (IPv4-mapped, NAT64, 6to4, Teredo). The policy is
lifted entirely by ``http_allow_private_networks`` or per network by
``http_allowed_networks``.

The decision (``is_refused``) is pure. ``refusal`` takes the resolver as an
argument (``system_resolve`` wraps ``socket.getaddrinfo``) so tests never touch
DNS; a host is refused when *any* address it resolves to is refused, and when it
does not resolve at all (an address that cannot be checked is not allowed).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str], Sequence[str]]

CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
PRIVATE_ADDRESS = "resolves to a loopback, private, link-local or reserved address"
UNRESOLVABLE = "host name does not resolve"
NO_HOST = "URL has no host"


@dataclass(frozen=True, slots=True)
class Policy:
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, allow_private: bool, allowed_networks: Iterable[str]) -> Policy:
        """Build from ``http_allow_private_networks`` and ``http_allowed_networks`` (CIDR text)."""
        return cls(
            allow_private,
            tuple(ipaddress.ip_network(n.strip(), strict=False) for n in allowed_networks),
        )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo client), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _is_special(address: IPAddress) -> bool:
    return (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in CGNAT
    )


def is_refused(address: IPAddress, policy: Policy) -> bool:
    """Whether the policy forbids connecting to ``address``."""
    if policy.allow_private:
        return False
    forms: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            forms.append(inner)
    if any(form in net for form in forms for net in policy.allowed_networks):
        return False
    return any(_is_special(form) for form in forms)


def parse_address(text: str) -> IPAddress | None:
    """An IP literal (IPv6 zone ids allowed), or None for a host name."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def system_resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``); [] when it does not."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


def host_refusal(host: str, policy: Policy, resolve: Resolver = system_resolve) -> str | None:
    """Why ``host`` may not be called, or None when every address it resolves to is allowed."""
    if policy.allow_private:
        return None
    literal = parse_address(host)
    texts: Sequence[str] = [str(literal)] if literal is not None else resolve(host)
    addresses = [a for a in (parse_address(t) for t in texts) if a is not None]
    if not addresses:
        return UNRESOLVABLE
    if any(is_refused(address, policy) for address in addresses):
        return PRIVATE_ADDRESS
    return None


def url_refusal(url: str, policy: Policy, resolve: Resolver = system_resolve) -> str | None:
    """``host_refusal`` for the host of an http(s) URL."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        return NO_HOST
    return host_refusal(host, policy, resolve)
