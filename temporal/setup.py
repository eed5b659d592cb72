"""Registers lcp's search attributes on a Temporal cluster (the dev server gets them by flag)."""

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client

from temporal.constants import SEARCH_ATTRIBUTES

_TYPES = {"Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD}


async def ensure_search_attributes(client: Client) -> list[str]:
    """Add whichever of lcp's search attributes the namespace lacks; returns the ones added."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        name: _TYPES[kind]
        for name, kind in SEARCH_ATTRIBUTES.items()
        if name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)
