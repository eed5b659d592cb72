"""Fuzz every operation of the OpenAPI spec with schemathesis (bounded): no input gets a 5xx."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.api.conftest import MintKey

EXAMPLES = int(os.environ.get("LCP_FUZZ_EXAMPLES", "25"))


@pytest.mark.parametrize("database_kind", ["sqlite"], indirect=True)
async def test_no_input_gets_a_server_error(api_url: str, mint_key: MintKey) -> None:
    key = await mint_key(roles=("admin",), requests_per_minute=10**9, tokens_per_minute=2 * 10**9)
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
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
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=api_url, headers={**headers, **(case.headers or {})}, timeout=60)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                )

        check()  # synchronous HTTP calls: the API serves them from its own thread
    assert not failures, "\n".join(failures[:10])
