"""The hostile-tenant suite runs against the same real stack as the API tests: a uvicorn server with
the conversation worker in-process, a real Temporal dev server, the simulator and real databases."""

from tests.api.conftest import admin, api, api_url, mint_key  # noqa: F401  (fixtures shared with tests/api)
