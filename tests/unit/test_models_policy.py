"""The models policy's deployments, routing and fallbacks: what a file may say, and the error that
names the file, the entry and the field when it says something wrong."""

from pathlib import Path

import pytest

from inference.gateway import load_routes
from policies.cooldown import CooldownSettings
from policies.models import Deployment, KubernetesDiscovery, ModelsPolicyError, parse_routes
from policies.picker import FlowControl, ScoreWeights, Strategy


def entry(**fields: object) -> dict[str, object]:
    return {"name": "m", "base_url": "http://a:8000/v1", **fields}


def test_a_base_url_is_a_group_of_one_deployment() -> None:
    route = parse_routes({"models": [entry(upstream_model="up", api_key="k")]})["m"]
    assert route.listed_deployments() == (Deployment("a:8000", "http://a:8000/v1", "up", "k"),)
    assert route.routing.strategy is Strategy.CACHE_AWARE


def test_an_embedding_model_is_one_more_model_group_and_its_canary_one_too() -> None:
    routes = parse_routes(
        {
            "models": [
                entry(),
                entry(name="e", kind="embedding", canary={"version": "v2", "upstream_model": "e2"}),
            ]
        }
    )
    assert routes["m"].kind == "chat"
    assert routes["e"].kind == "embedding" and routes["e"].canary is not None
    assert routes["e"].canary.kind == "embedding"
    assert load_routes()["sim-embed"].kind == "embedding"  # the default policy serves one


def test_deployments_take_the_entry_s_defaults_and_their_own_fields() -> None:
    document = {
        "models": [
            {
                "name": "m",
                "upstream_model": "up",
                "api_key": "k",
                "deployments": [
                    {"base_url": "http://r0:8000/v1/"},
                    {
                        "name": "east",
                        "base_url": "http://r1:8000/v1",
                        "upstream_model": "up-fp8",
                        "weight": 2.5,
                        "max_in_flight": 32,
                        "context_window": 8192,
                        "labels": {"cluster": "b", "region": "eu"},
                    },
                ],
                "routing": {
                    "strategy": "least_in_flight",
                    "scorer_weights": {"prefix": 5},
                    "cooldown": {"allowed_fails": 1, "cooldown_s": 30},
                },
                "fallbacks": ["n"],
                "context_window_fallbacks": ["long"],
            },
            {"name": "n", "base_url": "http://n/v1"},
            {"name": "long", "base_url": "http://long/v1", "content_policy_fallbacks": ["n"]},
        ]
    }
    route = parse_routes(document)["m"]
    first, east = route.listed_deployments()
    assert first == Deployment("r0:8000", "http://r0:8000/v1", "up", "k")
    assert east == Deployment(
        "east", "http://r1:8000/v1", "up-fp8", "k", 2.5, 32, 8192, (("cluster", "b"), ("region", "eu"))
    )
    assert route.routing.strategy is Strategy.LEAST_IN_FLIGHT
    assert route.routing.scorer_weights == ScoreWeights(prefix=5)
    assert route.routing.cooldown == CooldownSettings(allowed_fails=1, cooldown_s=30)
    assert route.fallbacks.general == ("n",) and route.fallbacks.context_window == ("long",)


def test_a_canary_serves_from_the_stable_deployments_unless_it_names_its_own() -> None:
    document = {
        "models": [
            {
                "name": "m",
                "deployments": [{"base_url": "http://r0/v1"}, {"base_url": "http://r1/v1"}],
                "canary": {"version": "v2", "upstream_model": "m-v2"},
            },
            {
                "name": "k",
                "base_url": "http://k/v1",
                "canary": {"version": "v2", "deployments": [{"base_url": "http://k2/v1"}]},
            },
        ]
    }
    routes = parse_routes(document)
    canary = routes["m"].canary
    assert canary is not None
    assert [(d.base_url, d.upstream_model) for d in canary.listed_deployments()] == [
        ("http://r0/v1", "m-v2"),
        ("http://r1/v1", "m-v2"),
    ]
    other = routes["k"].canary
    assert other is not None and [d.base_url for d in other.listed_deployments()] == ["http://k2/v1"]


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        (None, None),  # off unless asked for
        ({"strategy": "cache_aware"}, None),
        ({"strategy": "round_robin", "flow_control": True}, FlowControl()),
        ({"flow_control": False}, None),
        ({"flow_control": {"max_held": 8, "max_wait_s": 2}}, FlowControl(max_held=8, max_wait_s=2.0)),
    ],
)
def test_flow_control_settings(routing: dict[str, object] | None, expected: FlowControl | None) -> None:
    spec = entry() if routing is None else entry(routing=routing)
    assert parse_routes({"models": [spec]})["m"].routing.flow_control == expected


def test_kubernetes_discovery() -> None:
    route = parse_routes(
        {
            "models": [
                {
                    "name": "m",
                    "discovery": {"kubernetes": {"namespace": "inf", "service": "vllm", "port": "http"}},
                }
            ]
        }
    )["m"]
    assert route.discovery == KubernetesDiscovery("inf", "vllm", "http")
    assert route.listed_deployments() == ()  # they come from the cluster


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            [entry(routing={"strategy": "fastest"})],
            "models[0] (m): routing.strategy 'fastest' is not a strategy",
        ),
        ([entry(routing={"stratgy": "round_robin"})], "models[0] (m): routing has unknown keys stratgy"),
        (
            [entry(deployments=[{"base_url": "http://x/v1"}, {"weight": 1}])],
            "models[0] (m): deployments[1] is missing base_url",
        ),
        (
            [entry(deployments=[{"base_url": "http://x/v1", "weight": -1}])],
            "models[0] (m): deployments[0].weight must be a number of at least 0, not -1",
        ),
        (
            [entry(deployments=[{"base_url": "http://x/v1", "max_in_flight": 0}])],
            "deployments[0].max_in_flight must be a whole number of at least 1",
        ),
        (
            [entry(deployments=[{"base_url": "http://x/v1"}, {"base_url": "http://x/v1"}])],
            "deployment 'x' is listed twice",
        ),
        ([entry(deployments=[])], "deployments must be a list of at least one deployment"),
        (
            [entry(routing={"cooldown": {"cooldown_s": "soon"}})],
            "routing.cooldown.cooldown_s must be a number",
        ),
        ([entry(routing={"scorer_weights": {"gpu": 1}})], "routing.scorer_weights has unknown keys gpu"),
        (
            [entry(routing={"flow_control": {"max_held": 0}})],
            "routing.flow_control: max_held must be at least 1",
        ),
        ([entry(routing={"flow_control": {"max_wait_s": -1}})], "routing.flow_control.max_wait_s must be"),
        ([entry(routing={"flow_control": {"depth": 3}})], "routing.flow_control has unknown keys depth"),
        ([entry(fallback=["x"])], "models[0] (m) has unknown keys fallback"),
        ([entry(fallbacks=["nope"])], "model 'm': fallback 'nope' is not a model here"),
        ([entry(fallbacks="n")], "models[0] (m): fallbacks must be a list of model names"),
        (
            [entry(fallbacks=["n"]), {"name": "n", "base_url": "u", "context_window_fallbacks": ["m"]}],
            "fallbacks go round in a cycle: m -> n -> m",
        ),
        ([entry(fallbacks=["m"])], "fallbacks go round in a cycle: m -> m"),
        ([entry(discovery={"kubernetes": {"service": "s"}})], "discovery.kubernetes is missing namespace"),
        ([entry(discovery={"consul": {}})], "discovery must be {kubernetes:"),
        ([entry(kind="rerank")], "models[0] (m): kind must be one of chat, embedding, not 'rerank'"),
        (
            [entry(fallbacks=["e"]), {"name": "e", "base_url": "u", "kind": "embedding"}],
            "model 'm' serves chat: its fallback 'e' serves embedding",
        ),
    ],
)
def test_a_bad_entry_is_refused_naming_the_entry_and_the_field(models: list[object], message: str) -> None:
    with pytest.raises(ModelsPolicyError) as err:
        parse_routes({"models": models})
    assert message in str(err.value)


def test_the_error_names_the_file(tmp_path: Path) -> None:
    policy = tmp_path / "models.yaml"
    policy.write_text("models:\n  - name: m\n    base_url: http://a/v1\n    routing: {strategy: fastest}\n")
    with pytest.raises(
        ModelsPolicyError, match=f"^{policy}: models policy: models\\[0\\] \\(m\\): routing.strategy"
    ):
        load_routes(policy)
