"""Connecting to a Temporal that is not there ends in one clear error, after retrying a while."""

import pytest

from settings import TemporalSettings
from temporal.client import TemporalUnreachable, connect
from tests.http_server import free_port


async def test_unreachable_temporal_is_a_clear_error() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(TemporalUnreachable) as err:
        await connect(TemporalSettings(address=address, connect_timeout_s=0.5))
    assert address in str(err.value) and "LCP_TEMPORAL__ADDRESS" in str(err.value)
