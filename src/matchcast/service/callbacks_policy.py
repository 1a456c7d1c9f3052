"""Which callback URLs matchcast may call: a guard against server-side request forgery (SSRF).

``check_callback_url`` refuses anything but http(s), URLs with credentials, and hosts that resolve to an
address that is not a public unicast one: private, shared (CGNAT), loopback, link-local (cloud metadata at
169.254.169.254), multicast, reserved or unspecified. A host name is resolved and refused when ANY of its
addresses is forbidden. Exceptions, from settings only:

- ``MATCHCAST_CALLBACK_ALLOWED_HOSTS``: host names (or ``*.example.org`` suffixes) allowed as they are;
- ``MATCHCAST_CALLBACK_ALLOW_PRIVATE``: private, shared and loopback addresses allowed (link-local, multicast,
  reserved and unspecified addresses stay refused).

The deliverer should connect to one of the returned ``addresses`` (not resolve again), or re-check right before
each attempt, so that DNS rebinding between check and call cannot reach a refused address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from matchcast.config import Settings
from matchcast.errors import CallbackUrlRefused

MAX_URL_LENGTH = 2048
Resolver = Callable[[str, int], Sequence[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolves ``host`` to (IP literals in any form the C library accepts)."""
    infos: list[Any] = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


@dataclass(frozen=True)
class CheckedCallback:
    """A callback URL that passed, with the addresses it was checked against."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    allowed_by_name: bool


def allowed_hosts_of(settings: Settings) -> tuple[str, ...]:
    """``MATCHCAST_CALLBACK_ALLOWED_HOSTS`` as a tuple of lower-case names."""
    return tuple(h.strip().lower().rstrip(".") for h in settings.callback_allowed_hosts.split(",") if h.strip())


def _host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    for entry in allowed_hosts:
        entry = entry.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return True
        elif host == entry:
            return True
    return False


def _why_forbidden(ip: IPAddress, allow_private: bool) -> str | None:
    """Why an address may not be called, or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            why = _why_forbidden(embedded, allow_private)
            return f"{why} (embedded in {ip})" if why else None
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_loopback:  # before "reserved": ::1 lies in the reserved ::/8
        return None if allow_private else "loopback"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED):
        if allow_private:
            return None
        return "private" if ip.is_private else "shared (carrier-grade NAT)"
    if not ip.is_global:
        return "not globally routable"
    return None


_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def check_callback_url(
    url: str, allowed_hosts: Iterable[str] = (), allow_private: bool = False, *, resolver: Resolver = system_resolver
) -> CheckedCallback:
    """Accept ``url`` as a callback target or raise ``CallbackUrlRefused`` saying why."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise CallbackUrlRefused(f"callback URL must be a string of 1 to {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise CallbackUrlRefused("callback URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackUrlRefused(f"callback URL is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise CallbackUrlRefused(f"callback URL scheme must be http or https, not {scheme or 'none'!r}")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise CallbackUrlRefused("callback URL must not carry credentials")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise CallbackUrlRefused("callback URL has no host")
    port = port or (443 if scheme == "https" else 80)
    if _host_allowed(host, allowed_hosts):
        return CheckedCallback(url, scheme, host, port, (), True)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    try:
        addresses = [str(literal)] if literal is not None else list(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        raise CallbackUrlRefused(f"callback host {host!r} does not resolve: {type(exc).__name__}") from None
    if not addresses:
        raise CallbackUrlRefused(f"callback host {host!r} does not resolve")
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise CallbackUrlRefused(f"callback host {host!r} resolves to {text!r}, not an IP address") from None
        why = _why_forbidden(ip, allow_private)
        if why:
            raise CallbackUrlRefused(
                f"callback host {host!r} resolves to {ip}, a {why} address; allow it with "
                "MATCHCAST_CALLBACK_ALLOWED_HOSTS or MATCHCAST_CALLBACK_ALLOW_PRIVATE"
            )
    return CheckedCallback(url, scheme, host, port, tuple(addresses), False)


def check_callback_url_for(settings: Settings, url: str, *, resolver: Resolver = system_resolver) -> CheckedCallback:
    """``check_callback_url`` with the policy of these settings."""
    return check_callback_url(url, allowed_hosts_of(settings), settings.callback_allow_private, resolver=resolver)
