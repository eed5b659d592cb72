"""Outbound HTTP on a tenant's behalf: a client that connects only to public addresses, checked by the
resolved IP at connect time, unless the operator's allow-list (LCP_EGRESS__ALLOW) opens a host."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http.cookiejar import CookieJar, CookiePolicy
from typing import Any

import httpcore
import httpx

from policies.errors import PermanentError

__all__ = ["AddressNotAllowed", "EgressRules", "FencedBackend", "address_kind", "fenced_client"]

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# getaddrinfo(host, port, type=...) as the event loop has it; tests pass their own to play a resolver.
Resolver = Callable[..., Awaitable[list[tuple[Any, ...]]]]

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: an IPv4 address in the last 32 bits
SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)


class AddressNotAllowed(PermanentError):
    """A connection the fence refused: the name resolved to an address that is not public and that the
    allow-list does not open. Its message says so without naming the address; `address` and `kind` are
    for the operator's log."""

    def __init__(self, host: str, port: int, address: IPAddress, kind: str) -> None:
        super().__init__(
            f"{host}:{port} is not a public address and is not in the egress allow-list "
            "(LCP_EGRESS__ALLOW, and LCP_EGRESS__PROBE_ALLOW for chaos probes); outbound calls made for a "
            "tenant may not reach internal addresses"
        )
        self.host, self.port, self.address, self.kind = host, port, address, kind


def address_kind(address: IPAddress) -> str | None:
    """Why `address` is not public (loopback, private, link-local, ...), or None when it is. An IPv6 form
    that carries an IPv4 address (mapped, 6to4, NAT64) is judged by that IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
        if embedded is not None:
            return address_kind(embedded)
        if address.is_site_local:
            return "site-local"
    for kind, flagged in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared (CGNAT)", address in SHARED),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not global", not address.is_global),
    ):
        if flagged:
            return kind
    return None


@dataclass(frozen=True)
class _Entry:
    """One allow-list entry: a host name (or `*.domain`), or an address or network; and maybe a port."""

    name: str | None
    network: IPNetwork | None
    port: int | None

    def opens(self, host: str, address: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            unwrapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            candidates = (a for a in (address, unwrapped) if a is not None)
            return any(a.version == self.network.version and a in self.network for a in candidates)
        assert self.name is not None
        return host.endswith(self.name[1:]) if self.name.startswith("*.") else host == self.name


def _parse_entry(text: str) -> _Entry:
    """`host`, `host:port`, `*.domain[:port]`, `10.0.0.5[:port]`, `10.0.0.0/8[:port]`, `[fd00::/8]:port`
    or a bare IPv6 address or network."""
    entry = text.strip().lower()
    port_text = ""
    if entry.startswith("["):
        inside, closed, rest = entry[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"egress allow-list entry {text!r}: write IPv6 as [address] or [address]:port")
        entry, port_text = inside, rest[1:]
    elif entry.count(":") == 1:
        entry, _, port_text = entry.partition(":")
    port = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"egress allow-list entry {text!r}: the port must be 1 to 65535")
        port = int(port_text)
    try:
        return _Entry(None, ipaddress.ip_network(entry, strict=False), port)
    except ValueError:
        pass
    name = entry.rstrip(".")
    labels = (name[2:] if name.startswith("*.") else name).split(".")
    if not name or not all(label and all(c.isalnum() or c in "-_" for c in label) for label in labels):
        raise ValueError(
            f"egress allow-list entry {text!r}: expected a host name, *.domain, an address or a network "
            "(CIDR), each with an optional :port"
        )
    return _Entry(name, None, port)


class EgressRules:
    """What a tenant's outbound call may connect to: every public address, and what `allow` opens."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.entries = tuple(_parse_entry(text) for text in allow)

    def refusal(self, host: str, address: IPAddress, port: int) -> str | None:
        """Why connecting to `address` (resolved from `host`) on `port` is refused, or None if it may."""
        kind = address_kind(address)
        if kind is None:
            return None
        host = host.lower().rstrip(".")
        return None if any(entry.opens(host, address, port) for entry in self.entries) else kind


async def _loop_getaddrinfo(host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
    return await asyncio.get_running_loop().getaddrinfo(host, port, **kwargs)


class FencedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, with the name resolved here: every address it resolves to is checked,
    and the connection goes to a checked address literal, so the name cannot resolve differently between
    the check and the connect (DNS rebinding). TLS still verifies the certificate for the name."""

    def __init__(
        self,
        rules: EgressRules,
        inner: httpcore.AsyncNetworkBackend | None = None,
        resolve: Resolver = _loop_getaddrinfo,
    ) -> None:
        self._rules = rules
        self._inner = inner or httpcore.AnyIOBackend()
        self._resolve = resolve

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port, timeout)
        for address in addresses:  # any refused address refuses the name: the resolver must not choose
            if kind := self._rules.refusal(host, address, port):
                log.warning("egress refused: %s:%s resolved to %s (%s)", host, port, address, kind)
                raise AddressNotAllowed(host, port, address, kind)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                failure = err
        assert failure is not None
        raise failure

    async def _addresses(self, host: str, port: int, limit_s: float | None) -> list[IPAddress]:
        try:
            async with asyncio.timeout(limit_s):
                infos = await self._resolve(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as err:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {limit_s} s") from err
        except (OSError, UnicodeError) as err:
            raise httpcore.ConnectError(f"cannot resolve {host}: {err}") from err
        addresses: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolved to no address")
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound calls made for a tenant never use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _NoCookies(CookiePolicy):
    """Keeps no cookie and sends none: one client serves every tenant, so a jar would carry one tenant's
    session into another's call."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: Any) -> bool:
        return False

    def path_return_ok(self, path: str, request: Any) -> bool:
        return False


class _FencedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on the fenced backend (httpx takes no backend itself)."""

    def __init__(self, backend: FencedBackend) -> None:
        super().__init__(trust_env=False, retries=0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


def fenced_client(
    rules: EgressRules,
    *,
    resolve: Resolver = _loop_getaddrinfo,
    inner: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncClient:
    """An httpx client for calls made on a tenant's behalf: fenced by resolved address, no redirects
    followed, no proxy, netrc or certificate settings from the environment, no cookies kept."""
    return httpx.AsyncClient(
        transport=_FencedTransport(FencedBackend(rules, inner, resolve)),
        follow_redirects=False,
        trust_env=False,
        cookies=CookieJar(policy=_NoCookies()),
    )
