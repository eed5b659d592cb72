"""Connects to Temporal (dev server or a real cluster) with lcp's data converter."""

from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter

from settings import TemporalSettings


async def connect(settings: TemporalSettings) -> Client:
    tls: TLSConfig | bool = False
    if settings.tls_cert or settings.tls_ca:
        tls = TLSConfig(
            client_cert=settings.tls_cert.read_bytes() if settings.tls_cert else None,
            client_private_key=settings.tls_key.read_bytes() if settings.tls_key else None,
            server_root_ca_cert=settings.tls_ca.read_bytes() if settings.tls_ca else None,
        )
    elif settings.api_key:
        tls = True
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        tls=tls,
        api_key=settings.api_key,
        data_converter=pydantic_data_converter,
    )
