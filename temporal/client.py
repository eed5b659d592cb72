"""Connects to Temporal (dev server or a real cluster) with lcp's data converter."""

import asyncio
import logging
import time

from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter

from policies.errors import TransientError
from settings import TemporalSettings

log = logging.getLogger(__name__)


class TemporalUnreachable(TransientError, RuntimeError):
    """Temporal did not answer within the connect timeout."""


async def connect(settings: TemporalSettings) -> Client:
    """Connect, retrying for `settings.connect_timeout_s` (the server may still be starting)."""
    tls: TLSConfig | bool = False
    if settings.tls_cert or settings.tls_ca:
        tls = TLSConfig(
            client_cert=settings.tls_cert.read_bytes() if settings.tls_cert else None,
            client_private_key=settings.tls_key.read_bytes() if settings.tls_key else None,
            server_root_ca_cert=settings.tls_ca.read_bytes() if settings.tls_ca else None,
        )
    elif settings.api_key:
        tls = True
    deadline = time.monotonic() + settings.connect_timeout_s
    delay = 0.2
    while True:
        try:
            return await Client.connect(
                settings.address,
                namespace=settings.namespace,
                tls=tls,
                api_key=settings.api_key,
                data_converter=pydantic_data_converter,
            )
        except RuntimeError as err:
            if time.monotonic() + delay > deadline:
                raise TemporalUnreachable(
                    f"cannot reach Temporal at {settings.address} (namespace {settings.namespace}) "
                    f"after {settings.connect_timeout_s:.0f} s: is it running? "
                    "Set LCP_TEMPORAL__ADDRESS to point elsewhere"
                ) from err
            log.warning("Temporal at %s not reachable yet, retrying: %s", settings.address, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
