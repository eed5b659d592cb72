"""Every activity a contract declares (activities/contracts/) is implemented under the same name, with
the same argument and result types, by the class workers register; so a workflow that calls the
contract calls the real activity."""

import typing

import pytest
from temporalio import activity

from activities import argo, forecasting, kubernetes, litmus, prometheus, store
from activities.contracts import argo as argo_contract
from activities.contracts import forecasting as forecasting_contract
from activities.contracts import kubernetes as kubernetes_contract
from activities.contracts import litmus as litmus_contract
from activities.contracts import prometheus as prometheus_contract
from activities.contracts import store as store_contract

PAIRS = [
    (kubernetes_contract.KubernetesActivities, kubernetes.KubernetesActivities),
    (litmus_contract.LitmusActivities, litmus.LitmusActivities),
    (argo_contract.ArgoActivities, argo.ArgoActivities),
    (forecasting_contract.ForecastingActivities, forecasting.ForecastingActivities),
    (prometheus_contract.PrometheusActivities, prometheus.PrometheusActivities),
    (store_contract.StoreActivities, store.StoreActivities),
]


def declared(cls: type) -> dict[str | None, tuple[str, object]]:
    """Activity name (None for a dynamic one) → (method name, type hints) for the methods `cls` itself
    defines."""
    found: dict[str | None, tuple[str, object]] = {}
    for attr, fn in vars(cls).items():
        definition = activity._Definition.from_callable(fn) if callable(fn) else None
        if definition is not None:
            found[definition.name] = (attr, typing.get_type_hints(fn))
    return found


@pytest.mark.parametrize(("contract", "implementation"), PAIRS, ids=lambda c: c.__module__)
def test_each_contract_activity_is_implemented_alike(contract: type, implementation: type) -> None:
    assert issubclass(implementation, contract)
    promised, given = declared(contract), declared(implementation)
    assert promised, f"{contract.__name__} declares no activity"
    assert given == promised
