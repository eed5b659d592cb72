"""The egress fence: internal addresses refused by the address a name resolves to when connecting
(rebinding included), the allow-list opening exactly what it names, and no cookies, proxies or redirects."""

import ipaddress
import json
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from temporalio.testing import ActivityEnvironment

from activities.contracts.probes import HttpProbeInput, HttpProbeResult
from activities.egress import AddressNotAllowed, EgressRules, address_kind, fenced_client
from activities.probes import ProbeActivities
from cli.dev import demo_probe_allow
from tests.http_server import serve_in_thread


@dataclass
class Server:
    """A local HTTP server that counts what reaches it: the thing a fence must keep a tenant from."""

    url: str
    hits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _app(hits: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "DELETE"])
    async def anything(path: str, request: Request) -> Response:
        hits.append({"path": path, "method": request.method, "cookie": request.headers.get("cookie")})
        if path.startswith("redirect/"):
            return RedirectResponse(f"http://127.0.0.1:{path.removeprefix('redirect/')}/", status_code=302)
        response = PlainTextResponse("internal")
        response.set_cookie("session", "tenant-a")
        return response

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    hits: list[dict[str, Any]] = []
    with serve_in_thread(_app(hits)) as url:
        yield Server(url, hits)


@pytest.fixture(scope="module")
def other() -> Iterator[Server]:
    hits: list[dict[str, Any]] = []
    with serve_in_thread(_app(hits)) as url:
        yield Server(url, hits)


# ---- what is internal ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 around 169.254.169.254
        ("198.18.0.1", "private"),  # benchmarking
        ("2001:db8::1", "private"),  # documentation
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_internal_addresses_are_told_apart_from_public_ones(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


# ---- refused by the resolved address ---------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]", "2130706433", "0x7f.1", "127.1"],
)
async def test_every_spelling_of_loopback_is_refused_and_nothing_reaches_the_server(
    server: Server, host: str
) -> None:
    before = len(server.hits)
    async with fenced_client(EgressRules()) as http:
        with pytest.raises(AddressNotAllowed) as refused:
            await http.get(f"http://{host}:{server.port}/admin")
    assert refused.value.kind == "loopback" and "LCP_EGRESS__ALLOW" in str(refused.value)
    assert len(server.hits) == before


async def test_a_refusal_does_not_tell_what_a_name_resolved_to(server: Server) -> None:
    async with fenced_client(EgressRules()) as http:
        with pytest.raises(AddressNotAllowed) as refused:
            await http.get(f"http://localhost:{server.port}/")
    assert str(refused.value).startswith(f"localhost:{server.port} is not a public address")
    assert "127.0.0.1" not in str(refused.value)  # internal DNS is not the tenant's to learn


class Recorder(httpcore.AsyncNetworkBackend):
    """Where the fence asked to connect; it connects nowhere (the addresses here are not ours)."""

    def __init__(self) -> None:
        self.targets: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.targets.append(host)
        raise httpcore.ConnectError(f"not connecting to {host}:{port} in a test")


def _resolver(*answers: list[str]) -> Any:
    """A resolver that gives `answers` in turn, one per lookup (the last one from then on)."""
    queue = list(answers)

    async def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    return resolve


async def test_a_name_that_rebinds_to_an_internal_address_is_refused_at_connect_time() -> None:
    recorder = Recorder()
    resolve = _resolver(["93.184.216.34"], ["169.254.169.254"])
    async with fenced_client(EgressRules(), resolve=resolve, inner=recorder) as http:
        with pytest.raises(httpx.ConnectError):  # the first lookup is public: connected (here: refused)
            await http.get("http://rebind.example/latest/meta-data/")
        with pytest.raises(AddressNotAllowed):  # the second lookup is the metadata service
            await http.get("http://rebind.example/latest/meta-data/")
    # Connections go to the checked literal, never to the name (which could resolve anew).
    assert recorder.targets == ["93.184.216.34"]


async def test_a_name_with_any_internal_address_is_refused_whatever_its_order() -> None:
    recorder = Recorder()
    resolve = _resolver(["93.184.216.34", "10.0.0.5"])
    async with fenced_client(EgressRules(), resolve=resolve, inner=recorder) as http:
        with pytest.raises(AddressNotAllowed) as refused:
            await http.get("https://mixed.example/")
    assert refused.value.kind == "private" and recorder.targets == []


async def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    async def no_such_name(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async with fenced_client(EgressRules(), resolve=no_such_name, inner=Recorder()) as http:
        with pytest.raises(httpx.ConnectError, match="cannot resolve nowhere.example"):
            await http.get("http://nowhere.example/")


# ---- the allow-list --------------------------------------------------------------------------------


async def test_the_allow_list_opens_exactly_the_address_and_port_it_names(
    server: Server, other: Server
) -> None:
    async with fenced_client(EgressRules([f"127.0.0.1:{server.port}"])) as http:
        assert (await http.get(f"{server.url}/ok")).status_code == 200
        assert (await http.get(f"http://localhost:{server.port}/ok")).status_code == 200  # resolves there
        before = len(other.hits)
        with pytest.raises(AddressNotAllowed):
            await http.get(f"{other.url}/ok")  # the same address, another port
        assert len(other.hits) == before


@pytest.mark.parametrize(
    "entry",
    ["127.0.0.1", "127.0.0.0/8", "localhost", "LOCALHOST", "127.0.0.0/8:{port}", "localhost:{port}"],
)
async def test_an_entry_may_be_an_address_a_network_or_a_name(server: Server, entry: str) -> None:
    async with fenced_client(EgressRules([entry.format(port=server.port)])) as http:
        assert (await http.get(f"http://localhost:{server.port}/ok")).status_code == 200


@pytest.mark.parametrize("entry", ["10.0.0.0/8", "otherhost", "*.localhost", "127.0.0.1:1", "[::1]"])
async def test_an_entry_opens_nothing_else(server: Server, entry: str) -> None:
    async with fenced_client(EgressRules([entry])) as http:
        with pytest.raises(AddressNotAllowed):
            await http.get(f"http://localhost:{server.port}/ok")


def test_a_name_entry_opens_the_name_and_its_subdomains_only() -> None:
    rules = EgressRules(["metrics.internal:9090", "*.svc.cluster.local"])
    private = ipaddress.ip_address("10.0.0.7")
    assert rules.refusal("metrics.internal", private, 9090) is None
    assert rules.refusal("metrics.internal.", private, 9090) is None
    assert rules.refusal("metrics.internal", private, 9091) == "private"
    assert rules.refusal("web.lab.svc.cluster.local", private, 80) is None
    assert rules.refusal("svc.cluster.local", private, 80) == "private"
    assert rules.refusal("evilsvc.cluster.local", private, 80) == "private"
    assert rules.refusal("anything.example", ipaddress.ip_address("8.8.8.8"), 443) is None  # public


def test_an_ipv6_entry_and_a_mapped_address() -> None:
    rules = EgressRules(["[fd00::/8]:443", "10.0.0.0/8"])
    assert rules.refusal("x", ipaddress.ip_address("fd00::5"), 443) is None
    assert rules.refusal("x", ipaddress.ip_address("fd00::5"), 80) == "private"
    assert rules.refusal("x", ipaddress.ip_address("::ffff:10.1.1.1"), 80) is None


@pytest.mark.parametrize(
    "entry", ["10.0.0.0/8:99999", "[::1", "[::1]x", "bad host!", "", "*.", "host:port", "a..b"]
)
def test_a_bad_entry_is_refused_with_what_to_write(entry: str) -> None:
    with pytest.raises(ValueError, match="egress allow-list entry"):
        EgressRules([entry])


def test_lcp_dev_opens_the_lab_workload_to_probes_and_keeps_the_callers_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LCP_EGRESS__PROBE_ALLOW", raising=False)
    assert demo_probe_allow("127.0.0.1", 8601) == '["127.0.0.1:8601"]'
    assert demo_probe_allow("0.0.0.0", 8601) == '["127.0.0.1:8601", "0.0.0.0:8601"]'
    assert demo_probe_allow("::1", 8601) == '["127.0.0.1:8601", "[::1]:8601"]'
    monkeypatch.setenv("LCP_EGRESS__PROBE_ALLOW", '["tools.internal"]')
    assert demo_probe_allow("127.0.0.1", 18601) == '["tools.internal", "127.0.0.1:18601"]'
    rules = EgressRules(json.loads(demo_probe_allow("::1", 18601)))  # every entry parses
    assert rules.refusal("localhost", ipaddress.ip_address("::1"), 18601) is None
    assert rules.refusal("localhost", ipaddress.ip_address("::1"), 7233) == "loopback"  # Temporal stays shut


# ---- cookies, redirects, proxies -------------------------------------------------------------------


async def test_no_cookie_is_kept_from_one_call_to_the_next(server: Server) -> None:
    async with fenced_client(EgressRules([f"127.0.0.1:{server.port}"])) as http:
        first = await http.get(f"{server.url}/tenant-a")
        assert "session=tenant-a" in first.headers["set-cookie"]
        await http.get(f"{server.url}/tenant-b")
        assert len(http.cookies) == 0
    assert server.hits[-1] == {"path": "tenant-b", "method": "GET", "cookie": None}


async def test_a_redirect_is_not_followed_and_a_followed_one_is_fenced_too(
    server: Server, other: Server
) -> None:
    before = len(other.hits)
    async with fenced_client(EgressRules([f"127.0.0.1:{server.port}"])) as http:
        response = await http.get(f"{server.url}/redirect/{other.port}")
        assert response.status_code == 302
        with pytest.raises(AddressNotAllowed):  # asked to follow: the next hop is checked when connecting
            await http.get(f"{server.url}/redirect/{other.port}", follow_redirects=True)
    assert len(other.hits) == before


async def test_proxies_from_the_environment_are_not_used(
    server: Server, other: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, other.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    before = len(other.hits)
    async with fenced_client(EgressRules([f"127.0.0.1:{server.port}"])) as http:
        assert (await http.get(f"{server.url}/direct")).status_code == 200
    assert len(other.hits) == before and server.hits[-1]["path"] == "direct"


# ---- chaos HTTP probes -----------------------------------------------------------------------------


async def _probe(server: Server, request: HttpProbeInput, allow: list[str]) -> HttpProbeResult:
    async with fenced_client(EgressRules(allow)) as http:
        result: HttpProbeResult = await ActivityEnvironment().run(ProbeActivities(http).http, request)
    return result


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT", "PATCH", "OPTIONS", "get"])
async def test_a_probe_that_could_change_something_is_not_sent(server: Server, method: str) -> None:
    before = len(server.hits)
    allow = [f"127.0.0.1:{server.port}"]
    result = await _probe(server, HttpProbeInput(f"{server.url}/thing", method=method), allow)
    assert not result.passed and result.status is None and "GET or HEAD" in result.detail
    assert len(server.hits) == before


async def test_a_probe_to_an_internal_address_fails_without_reaching_it(server: Server) -> None:
    before = len(server.hits)
    result = await _probe(server, HttpProbeInput(f"{server.url}/healthz"), [])
    assert not result.passed and result.status is None and "not sent" in result.detail
    assert len(server.hits) == before


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_an_opened_probe_reads_its_status(server: Server, method: str) -> None:
    allow = [f"127.0.0.1:{server.port}"]
    result = await _probe(server, HttpProbeInput(f"{server.url}/healthz", method=method), allow)
    assert result.passed and result.status == 200
    assert server.hits[-1]["method"] == method
