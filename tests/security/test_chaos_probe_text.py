"""A chaos probe's name, URL and query hold no control or bidi characters, and a URL httpx will not send is
a failed probe, never an activity that raises. Found by the adversarial pass on the platform side: an
experiment whose HTTP probe URL held an ESC was accepted (201), and its `probes.http` activity raised
httpx.InvalidURL (no HTTPError) on every attempt, holding the run in its steady-state check; probe names
with escape sequences, bidi overrides and 300 characters were stored in the run's journal and logs."""

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.contracts.probes import HttpProbeInput
from activities.egress import EgressRules, fenced_client
from activities.probes import ProbeActivities
from chaos.experiments import DEFAULT_CATALOGUE, HttpProbe, Hypothesis, PromProbe, load_experiments
from tests.api.conftest import MintKey

ESC, RLO = "\x1b[2J", "\u202e"
HEALTHZ = "http://127.0.0.1:8601/healthz"


@pytest.fixture
async def sre(api_url: str, mint_key: MintKey) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {await mint_key(roles=('sre',))}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, headers=headers) as http:
        yield http


def _with(probe: HttpProbe | PromProbe) -> str | None:
    experiment = load_experiments(DEFAULT_CATALOGUE)[0]
    return replace(experiment, hypothesis=Hypothesis(probes=(probe,))).problem()


@pytest.mark.parametrize(
    ("probe", "words"),
    [
        (HttpProbe("h", f"{HEALTHZ}?{ESC}"), "url: control"),
        (HttpProbe("h", f"{HEALTHZ}{RLO}"), "url: control"),
        (HttpProbe("h", f"{HEALTHZ}\n"), "url: control"),
        (HttpProbe("h", HEALTHZ + "?" + "a" * 2000), "url: at most 2000"),
        (HttpProbe(f"h{ESC}", HEALTHZ), "name: control"),
        (HttpProbe(f"h{RLO}gnp", HEALTHZ), "name: control"),
        (HttpProbe("h" * 101, HEALTHZ), "name: at most 100"),
        (PromProbe("p", f"vector(1) # {ESC}", ">=", 0), "query: control"),
        (PromProbe("p", "vector(1)" + " " * 2000, ">=", 0), "query: at most 2000"),
    ],
)
def test_probe_text_is_refused(probe: HttpProbe | PromProbe, words: str) -> None:
    assert words in (_with(probe) or "")


def test_probe_text_that_reads_fine_is_kept() -> None:
    assert _with(HttpProbe("healthz [red]x[/]", f"{HEALTHZ}?q=%1B")) is None
    assert _with(PromProbe("p", "sum(\n  vector(1)\t)", ">=", 0)) is None  # a query may span lines


async def test_a_url_httpx_will_not_send_is_a_failed_probe() -> None:
    """A run started without the API gets the checks too, but the activity must not raise either."""
    async with fenced_client(EgressRules()) as http:
        result = await ActivityEnvironment().run(
            ProbeActivities(http).http, HttpProbeInput(f"http://example.invalid/{ESC}")
        )
    assert not result.passed and result.status is None and "InvalidURL" in result.detail


async def test_the_api_refuses_them(sre: httpx.AsyncClient) -> None:
    experiment = {
        "name": "probe-text",
        "target": {"namespace": "lab", "app_label": "app.kubernetes.io/name=chat-api"},
        "fault": {"kind": "pod-delete"},
        "hypothesis": {"probes": [{"name": "h", "type": "http", "url": f"{HEALTHZ}?{ESC}"}]},
    }
    answer = await sre.post("/v1/chaos", json={"definition": experiment})
    assert answer.status_code == 422, answer.text
    assert "url: control" in answer.text
    answer = await sre.post("/v1/chaos/schedules", json={"definition": experiment, "every_s": 3600})
    assert answer.status_code == 422 and "url: control" in answer.text
