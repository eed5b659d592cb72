"""Lab fixtures: the Prometheus binary, required under `make test` and skipped elsewhere."""

import os

import pytest

from lab.prometheus import prometheus_binary


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    try:
        return prometheus_binary()
    except FileNotFoundError:
        if os.environ.get("LCP_REQUIRE_PROMETHEUS"):
            pytest.fail(
                "Prometheus is required (LCP_REQUIRE_PROMETHEUS) but the `prometheus` binary is missing"
            )
        pytest.skip("Prometheus is not installed: `make test` installs it")
