"""Shared test fixtures: a real Temporal dev server, the LLM simulator, SQLite, PostgreSQL, Prometheus."""

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from lab.llm_simulator import create_app as create_simulator
from lab.prometheus import prometheus_binary
from settings import Settings, TemporalSettings
from store.migrate import upgrade_database
from temporal.constants import KIND, PHASE, SERVICE, TENANT
from temporal.devserver import DYNAMIC_CONFIG, temporal_binary
from tests.http_server import free_port, serve_in_thread
from tests.postgres import postgres_cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files that take minutes first (marked `minutes`), then the other end-to-end files: in parallel
    runs (`make test` hands whole files to three processes in this order) the short files then fill in
    beside them instead of one long file running alone at the end."""
    items.sort(
        key=lambda item: (item.get_closest_marker("minutes") is None, "/e2e/" not in item.path.as_posix())
    )


if worker := os.environ.get("PYTEST_XDIST_WORKER"):  # gw0, gw1, ...: each takes its own ports
    # A worker that replaces a crashed one is numbered past the count (gw3 of 3): it takes the slice of
    # the one it replaces, instead of a slice no port is in.
    _count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["LCP_PORT_SLICE"] = f"{int(worker.removeprefix('gw')) % _count}/{_count}"


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    extra = [arg for k, v in DYNAMIC_CONFIG.items() for arg in ("--dynamic-config-value", f"{k}={v}")]
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=pydantic_data_converter,
        search_attributes=[TENANT, KIND, SERVICE, PHASE],
        dev_server_extra_args=extra,
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """The Prometheus binary: required under `make test` (LCP_REQUIRE_PROMETHEUS), skipped elsewhere."""
    try:
        return prometheus_binary()
    except FileNotFoundError:
        if os.environ.get("LCP_REQUIRE_PROMETHEUS"):
            pytest.fail(
                "Prometheus is required (LCP_REQUIRE_PROMETHEUS) but the `prometheus` binary is missing"
            )
        pytest.skip("Prometheus is not installed: `make test` installs it")


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def simulator() -> Iterator[str]:
    """Base URL (ending in /v1) of a real LLM simulator served over HTTP."""
    with serve_in_thread(create_simulator()) as url:
        yield f"{url}/v1"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port (or LCP_TEST_POSTGRES_URL if set)."""
    if url := os.environ.get("LCP_TEST_POSTGRES_URL"):
        yield url
        return
    with postgres_cluster() as cluster:
        yield cluster.url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def blank_database_url(database_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of each kind, with no tables yet."""
    if database_kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'lcp.db'}"
    return await fresh_postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def database_url(blank_database_url: str) -> str:
    """A database of each kind at the newest schema, with no rows."""
    await upgrade_database(blank_database_url)
    return blank_database_url


async def fresh_postgres_database(base_url: str) -> str:
    """A new, empty database on the PostgreSQL server at `base_url`."""
    import asyncpg

    name = f"lcp_{int(time.time() * 1000)}_{os.getpid()}_{free_port()}"
    raw = base_url.replace("postgresql+asyncpg", "postgresql")
    connection = await asyncpg.connect(raw)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return base_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, simulator: str, temporal_env: WorkflowEnvironment
) -> Settings:
    config = temporal_env.client.service_client.config
    return Settings(
        home=tmp_path,
        database_url=database_url,
        llm_url=simulator,
        temporal=TemporalSettings(address=config.target_host),
    )
