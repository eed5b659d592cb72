"""Fuzz every operation of the OpenAPI spec (bounded): schemathesis' valid and invalid inputs, then hostile
payloads (lone surrogates, control characters, huge strings and numbers, deep nesting, large bodies) in
every field of every JSON body. No input gets a 5xx, and the API stays up."""

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.api.conftest import MintKey

EXAMPLES = int(os.environ.get("LCP_FUZZ_EXAMPLES", "25"))

# What a hostile tenant puts in a string field: JSON escapes that decode to a lone surrogate, NUL, bidi
# overrides and terminal escapes, and a string far past every content limit.
HOSTILE_STRINGS = (
    "\ud800",
    "a\udfffb",
    "\x00",
    "\u202e\u2066evil",
    "\x1b[31m\x1b]0;title\x07",
    "x" * 1_000_000,
)
# ...and in a number field: booleans, huge, negative, non-finite (as Python's json writes them) and strings.
HOSTILE_NUMBERS: tuple[Any, ...] = (True, 10**30, -(10**12), 1e308, float("nan"), "1")
DEEP = 10_000  # nesting depth of a body that is all brackets
LARGE_BODY_BYTES = 8 * 1024 * 1024


def _api_alive(api_url: str) -> None:
    response = httpx.get(f"{api_url}/healthz", timeout=30)
    assert response.status_code == 200, f"/healthz answered {response.status_code} after the fuzz"


def _schema(api_url: str, modes: list[GenerationMode]) -> Any:
    config = schemathesis.Config()
    config.projects.default.generation.update(modes=modes, allow_x00=True)
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json", config=config)


@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
async def test_no_input_gets_a_server_error(api_url: str, mint_key: MintKey) -> None:
    key = await mint_key(roles=("platform",), requests_per_minute=10**9, tokens_per_minute=2 * 10**9)
    schema = _schema(api_url, [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    headers = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case[Any]) -> None:
            response = case.call(
                base_url=api_url, headers={**headers, **dict(case.headers or {})}, timeout=60
            )
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                )

        check()  # synchronous HTTP calls: the API serves them from its own thread
    assert not failures, "\n".join(failures[:10])
    _api_alive(api_url)


def _variants(body: Any) -> Iterator[tuple[str, Any]]:
    """The body with one leaf at a time replaced by each hostile value, and one hostile extra key."""
    if isinstance(body, dict):
        for name, value in body.items():
            for where, variant in _variants(value):
                yield f".{name}{where}", {**body, name: variant}
        yield ".<key>", {**body, "\ud800": 1}
    elif isinstance(body, list):
        for index, value in enumerate(body[:3]):
            for where, variant in _variants(value):
                yield f"[{index}]{where}", [*body[:index], variant, *body[index + 1 :]]
    elif isinstance(body, str):
        for hostile in HOSTILE_STRINGS:
            yield f"={hostile[:12]!r}", hostile
    elif isinstance(body, bool | int | float):
        for hostile in HOSTILE_NUMBERS:
            yield f"={hostile!r}", hostile


@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
async def test_hostile_payloads_get_no_server_error(api_url: str, mint_key: MintKey) -> None:
    """Starting from one valid body per operation, every field gets every hostile value; then the whole
    body is replaced by deep nesting and by a body over the size limit."""
    key = await mint_key(roles=("platform",), requests_per_minute=10**9, tokens_per_minute=2 * 10**9)
    schema = _schema(api_url, [GenerationMode.POSITIVE])
    failures: list[str] = []
    sent = 0
    with httpx.Client(base_url=api_url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.method.upper() not in ("POST", "PUT", "PATCH") or not operation.body:
                continue

            @settings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def attack(case: schemathesis.Case[Any]) -> None:
                nonlocal sent
                bodies = list(_variants(case.body if isinstance(case.body, dict | list) else {}))
                bodies += [("<deep>", None), ("<large>", None)]
                for where, body in bodies:
                    if where == "<deep>":
                        content = b"[" * DEEP + b"]" * DEEP
                    elif where == "<large>":
                        content = b'{"content": "' + b"x" * LARGE_BODY_BYTES + b'"}'
                    else:
                        content = json.dumps(body).encode()  # lone surrogates go as \ud800 escapes
                    sent += 1
                    try:
                        response = http.request(
                            case.method,
                            case.formatted_path,
                            params=case.query,
                            content=content,
                            headers={"content-type": "application/json"},
                        )
                    except httpx.TransportError as err:  # the server dropped the connection: an error too
                        failures.append(f"{case.method} {case.formatted_path} body{where} -> {err!r}")
                        continue
                    if response.status_code >= 500:
                        failures.append(
                            f"{case.method} {case.formatted_path} body{where} -> "
                            f"{response.status_code}: {response.text[:300]}"
                        )

            attack()
    assert sent >= 100, f"only {sent} hostile requests were sent: the spec lost its JSON bodies?"
    assert not failures, f"{len(failures)} of {sent} hostile requests got a 5xx:\n" + "\n".join(failures[:15])
    _api_alive(api_url)
