"""Who is asking: the client's address (through a trusted reverse proxy) and address allow-lists.

``X-Forwarded-For`` is believed only when the connection itself comes from one of
``http.trusted_proxies`` (nginx on 127.0.0.1, say); from anybody else it is a header like any other
and ignored, so a client cannot pretend to be Novofon by writing it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Where the server's middleware leaves the client's address.
CLIENT_KEY: web.RequestKey[Address | None] = web.RequestKey("client")
FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def networks(items: Iterable[str]) -> tuple[Network, ...]:
    """Parse IPs and CIDRs ("203.0.113.7", "198.51.100.0/24", "::1"); ValueError names the bad one."""
    out: list[Network] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            example = "e.g. 203.0.113.7, 198.51.100.0/24"
            raise ValueError(f"{item!r} is not an IP address or network ({example})") from None
    return tuple(out)


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [::1]:port
        text = text[1 : text.index("]")]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def contains(nets: Sequence[Network], ip: Address | None) -> bool:
    return ip is not None and any(ip.version == n.version and ip in n for n in nets)


def resolve(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> Address | None:
    """The client: the peer itself, or — when the peer is a trusted proxy — the rightmost address of
    ``X-Forwarded-For`` that is not a trusted proxy (addresses left of it are the client's own claims)."""
    ip = _address(peer)
    if not forwarded_for or not contains(trusted, ip):
        return ip
    for hop in reversed(forwarded_for.split(",")):
        hop_ip = _address(hop)
        if hop_ip is None:
            return None  # garbage in the chain: nobody we can name
        if not contains(trusted, hop_ip):
            return hop_ip
        ip = hop_ip
    return ip


def client_address(request: web.Request) -> Address | None:
    """The client as the server resolved it (see ``resolve``)."""
    return request.get(CLIENT_KEY)


def is_local(request: web.Request) -> bool:
    """A request from this machine itself, not relayed by a proxy (which would add its headers)."""
    ip = _address(request.remote)
    if ip is None or not ip.is_loopback:
        return False
    return not any(h in request.headers for h in FORWARDING_HEADERS)
