"""Which addresses a delivery may connect to: globally routable unicast ones, nothing else.

A pure policy, tested from a table. `ipaddress`'s `is_global` is the base; on top of it
an explicit list refuses what some Python versions count as global (multicast, the 6to4
relay, documentation and deprecated ranges), and an IPv6 address that carries an IPv4
one (IPv4-mapped, 6to4, NAT64) is judged by the IPv4 address inside it.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

# network -> what it is; every one refused whatever `is_global` says
DENIED: dict[IPv4Network | IPv6Network, str] = {
    ip_network(net): what
    for net, what in (
        ("0.0.0.0/8", "this network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (carrier-grade NAT, some clouds' metadata)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved, and the broadcast address"),
        ("::/96", "unspecified, loopback or IPv4-compatible"),
        ("::ffff:0:0:0/96", "IPv4-translated"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments (Teredo among them)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
}
_NAT64 = IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one reaches: IPv4-mapped, 6to4 (2002::/16) or NAT64 (64:ff9b::/96)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def refusal(address: IPv4Address | IPv6Address | str) -> str | None:
    """Why a delivery may not connect to `address`, or None when it is public."""
    if isinstance(address, str):
        address = ip_address(address.partition("%")[0])  # an IPv6 zone (fe80::1%eth0) is no part of it
    if isinstance(address, IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            why = refusal(inner)
            return f"it carries {inner}, {why}" if why else None
    if address.is_multicast:
        return "a multicast address"
    for network, what in DENIED.items():
        if address.version == network.version and address in network:
            return f"in {network}, {what}"
    if not address.is_global:
        return "not a globally routable address"
    return None
