"""Tests of the lab workload simulator and its traffic sources: splits, faults, latency, traces, admin API."""

import asyncio
import math
import random
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from statistics import NormalDist
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.traces import (
    MAX_TRACE_MINUTES,
    Constant,
    Replay,
    per_minute,
    read_azure_llm,
    read_minute_csv,
    read_servegen,
    read_trace,
    scale_for,
)
from lab.workload import (
    NO_VERSION,
    Fault,
    InMemoryCluster,
    ServiceSpec,
    UnknownService,
    VersionState,
    Workload,
    create_app,
    latency_quantile_s,
    poisson,
    traffic_shares,
)
from tests.http_server import serve_in_thread
from tests.waiting import eventually

TRACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces"
AZURE_CONV = TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
AZURE_CODE = TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_code.csv"
SERVEGEN_SMALL = TRACES / "servegen_language" / "m-small"
NS, SVC = "demo", "web"


def needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real trace {path} is not here (it lives in the shared data folder)")
    return path


# ---- helpers ---------------------------------------------------------------------------------------------


def make(
    versions: dict[str, int],
    rps: float = 100.0,
    *,
    weights: dict[str, float] | None = None,
    seed: int = 1,
    **spec: float,
) -> tuple[Workload, InMemoryCluster]:
    """A workload simulating demo/web with one Deployment web-<version> per version, `ready` replicas each."""
    cluster = InMemoryCluster()
    cluster.set_versions(NS, SVC, [VersionState(v, f"{SVC}-{v}", ready) for v, ready in versions.items()])
    cluster.set_weights(NS, SVC, weights)
    workload = Workload(cluster, seed=seed)
    workload.add_service(ServiceSpec(NS, SVC, Constant(rps), **spec))
    return workload, cluster


async def run_for(workload: Workload, seconds: float, dt: float = 1.0) -> None:
    for _ in range(round(seconds / dt)):
        await workload.step(dt)


def requests(workload: Workload) -> dict[tuple[str, str], float]:
    """http_requests_total by (version, code), read back from the exposition text."""
    found = {}
    for family in text_string_to_metric_families(workload.metrics_text().decode()):
        for s in family.samples:
            if s.name == "http_requests_total" and s.labels["service"] == SVC:
                found[s.labels["version"], s.labels["code"]] = s.value
    return found


def total(workload: Workload, version: str) -> float:
    return sum(n for (v, _), n in requests(workload).items() if v == version)


def buckets(workload: Workload, version: str) -> list[tuple[float, float]]:
    return sorted(
        (float(s.labels["le"]), s.value)
        for family in text_string_to_metric_families(workload.metrics_text().decode())
        for s in family.samples
        if s.name == "http_request_duration_seconds_bucket" and s.labels["version"] == version
    )


def quantile(q: float, workload: Workload, version: str) -> float:
    """histogram_quantile(q, ...) as Prometheus computes it: linear within the bucket holding the rank."""
    cumulative = buckets(workload, version)
    rank = q * cumulative[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    raise AssertionError("no bucket reached the rank")


def status_of(workload: Workload) -> Any:
    return workload.service_status(NS, SVC)


def gauge(workload: Workload, name: str, version: str | None = None) -> float:
    for family in text_string_to_metric_families(workload.metrics_text().decode()):
        for s in family.samples:
            if s.name == name and s.labels.get("version") == version:
                return s.value
    raise AssertionError(f"no {name} for version {version}")


# ---- traffic split ---------------------------------------------------------------------------------------


async def test_traffic_follows_ready_replicas() -> None:
    workload, _ = make({"v1": 9, "v2": 1})
    await run_for(workload, 200)
    v1, v2 = total(workload, "v1"), total(workload, "v2")
    assert v1 + v2 == pytest.approx(20_000, rel=0.03)
    assert v2 / (v1 + v2) == pytest.approx(0.10, abs=0.01)
    assert requests(workload)["v1", "503"] == requests(workload)["v2", "503"] == 0


async def test_ready_replicas_change_the_split_as_they_change() -> None:
    workload, cluster = make({"v1": 1, "v2": 1})
    await run_for(workload, 100)
    cluster.set_ready(NS, SVC, "web-v2", 3)
    before = total(workload, "v1"), total(workload, "v2")
    await run_for(workload, 100)
    gained_v1, gained_v2 = total(workload, "v1") - before[0], total(workload, "v2") - before[1]
    assert gained_v2 / (gained_v1 + gained_v2) == pytest.approx(0.75, abs=0.02)
    assert gauge(workload, "lab_workload_ready_replicas", "v2") == 3


@pytest.mark.parametrize(
    ("weights", "canary_share"),
    [
        ({"v1": 50, "v2": 50}, 0.5),  # Istio subsets are versions
        ({"web-v1": 80, "web-v2": 20}, 0.2),  # HTTPRoute backends are Deployments
        ({"v1": 100, "v2": 0}, 0.0),
    ],
)
async def test_router_weights_override_ready_replicas(weights: dict[str, float], canary_share: float) -> None:
    workload, _ = make({"v1": 9, "v2": 1}, weights=weights)
    await run_for(workload, 200)
    v1, v2 = total(workload, "v1"), total(workload, "v2")
    assert v2 / (v1 + v2) == pytest.approx(canary_share, abs=0.015)


async def test_a_version_without_ready_replicas_gets_nothing() -> None:
    workload, _ = make({"v1": 4, "v2": 0})
    await run_for(workload, 100)
    counts = requests(workload)
    assert counts["v2", "200"] == counts["v2", "500"] == counts["v2", "503"] == 0  # exposed, at zero
    assert counts["v1", "200"] == pytest.approx(10_000, rel=0.03)
    assert counts["v1", "503"] == 0


async def test_a_weighted_version_without_ready_replicas_fails_its_share_with_503() -> None:
    workload, _ = make({"v1": 4, "v2": 0}, weights={"v1": 80, "v2": 20})
    await run_for(workload, 100)
    counts = requests(workload)
    assert counts["v2", "200"] == 0
    assert counts["v2", "503"] / 10_000 == pytest.approx(0.2, abs=0.015)
    assert counts["v1", "503"] == 0


async def test_with_nothing_ready_every_request_fails_under_version_none() -> None:
    workload, _ = make({"v1": 0, "v2": 0})
    await run_for(workload, 50)
    counts = requests(workload)
    assert counts[NO_VERSION, "503"] == pytest.approx(5_000, rel=0.05)
    assert total(workload, "v1") == total(workload, "v2") == 0


def test_traffic_shares_table() -> None:
    v = [VersionState("v1", "web-v1", 3), VersionState("v1", "web-v1b", 1), VersionState("v2", "web-v2", 4)]
    assert traffic_shares(v, None) == {"v1": 0.5, "v2": 0.5}  # Deployments of one version add up
    assert traffic_shares(v, {"v2": 3, "web-v1": 1}) == {"v1": 0.25, "v2": 0.75}
    assert traffic_shares(v, {"v3": 1, "v2": 1}) == {
        "v3": 0.5,
        "v2": 0.5,
    }  # a route to nothing keeps its share
    assert traffic_shares(v, {"v1": 1, "v2": 0}) == {"v1": 1.0}
    assert traffic_shares(v, {"v1": 0}) == {NO_VERSION: 1.0}
    assert traffic_shares([], None) == {NO_VERSION: 1.0}


# ---- faults ----------------------------------------------------------------------------------------------


async def test_error_share_shows_in_that_version_only() -> None:
    workload, _ = make({"v1": 5, "v2": 5})
    workload.set_fault(NS, SVC, "v2", Fault(error_share=0.2))
    await run_for(workload, 200)
    counts = requests(workload)
    assert counts["v2", "500"] / total(workload, "v2") == pytest.approx(0.2, abs=0.02)
    assert counts["v1", "500"] == 0
    assert total(workload, "v2") == pytest.approx(10_000, rel=0.04)  # errors are answers, not lost traffic


async def test_added_latency_shifts_that_version_quantiles_only() -> None:
    workload, _ = make({"v1": 5, "v2": 5}, base_latency_ms=50)
    workload.set_fault(NS, SVC, "v2", Fault(added_latency_ms=200))
    await run_for(workload, 100)
    for q in (0.5, 0.9):
        assert quantile(q, workload, "v2") - quantile(q, workload, "v1") == pytest.approx(0.2, abs=0.06)
    assert quantile(0.5, workload, "v1") == pytest.approx(0.05, abs=0.015)


async def test_latency_grows_with_utilisation() -> None:
    idle, _ = make({"v1": 1}, rps=10, capacity_per_replica_rps=100)
    busy, _ = make({"v1": 1}, rps=90, capacity_per_replica_rps=100)
    await run_for(idle, 200)
    await run_for(busy, 200)
    assert gauge(busy, "lab_workload_utilization_ratio", "v1") == pytest.approx(0.9)
    assert quantile(0.9, busy, "v1") > 3 * quantile(0.9, idle, "v1")
    assert requests(busy)["v1", "503"] == 0  # busy, not saturated


async def test_cpu_saturation_raises_latency_and_503s() -> None:
    healthy, _ = make({"v1": 2}, rps=60, capacity_per_replica_rps=50)
    saturated, _ = make({"v1": 2}, rps=60, capacity_per_replica_rps=50)
    saturated.set_fault(NS, SVC, "v1", Fault(cpu_saturation=3))
    await run_for(healthy, 200)
    await run_for(saturated, 200)
    assert requests(healthy)["v1", "503"] == 0
    # capacity 2 * 50 / 3 = 33.3 rps for 60 offered: 1 - 33.3/60 = 44% turned away
    assert requests(saturated)["v1", "503"] / total(saturated, "v1") == pytest.approx(0.444, abs=0.02)
    assert gauge(saturated, "lab_workload_utilization_ratio", "v1") == pytest.approx(1.8)
    assert quantile(0.9, saturated, "v1") > 3 * quantile(0.9, healthy, "v1")


async def test_cpu_saturation_slows_requests_even_with_capacity_to_spare() -> None:
    healthy, _ = make({"v1": 10}, rps=60, capacity_per_replica_rps=50)
    slowed, _ = make({"v1": 10}, rps=60, capacity_per_replica_rps=50)
    slowed.set_fault(NS, SVC, "v1", Fault(cpu_saturation=3))
    await run_for(healthy, 200)
    await run_for(slowed, 200)
    assert requests(slowed)["v1", "503"] == 0
    assert quantile(0.5, slowed, "v1") > 2.5 * quantile(0.5, healthy, "v1")


async def test_high_rates_count_every_request_in_the_histogram() -> None:
    workload, _ = make({"v1": 100}, rps=20_000, capacity_per_replica_rps=1000)
    await run_for(workload, 3)
    count = buckets(workload, "v1")[-1][1]
    assert count == total(workload, "v1") == pytest.approx(60_000, rel=0.02)
    assert quantile(0.5, workload, "v1") == pytest.approx(0.05, abs=0.015)


async def test_faults_clear_per_version_and_all_at_once() -> None:
    workload, _ = make({"v1": 5, "v2": 5})
    workload.set_fault(NS, SVC, "v1", Fault(error_share=1))
    workload.set_fault(NS, SVC, "v2", Fault(error_share=1))
    assert workload.clear_faults(NS, SVC, "v1") == 1
    await run_for(workload, 20)
    assert requests(workload)["v1", "500"] == 0 and requests(workload)["v2", "500"] > 0
    assert workload.clear_faults() == 1
    errors = requests(workload)["v2", "500"]
    await run_for(workload, 20)
    assert requests(workload)["v2", "500"] == errors
    with pytest.raises(UnknownService, match="demo/web"):
        workload.set_fault(NS, "nope", "v1", Fault())
    with pytest.raises(ValueError, match="service"):
        workload.clear_faults(version="v1")


def test_fault_values_are_validated() -> None:
    for bad in ({"error_share": 1.5}, {"added_latency_ms": -1}, {"cpu_saturation": 0.5}, {"x": 1}):
        with pytest.raises(ValueError):
            Fault.model_validate(bad)


# ---- the cluster view and the loop -----------------------------------------------------------------------


async def test_an_unreachable_cluster_keeps_the_last_view() -> None:
    workload, cluster = make({"v1": 1, "v2": 1})
    await run_for(workload, 10)
    cluster.error = ConnectionError("emulator down")
    await run_for(workload, 100)
    assert "emulator down" in status_of(workload)["cluster_error"]
    v1, v2 = total(workload, "v1"), total(workload, "v2")
    assert v1 + v2 == pytest.approx(11_000, rel=0.03)  # still served as last seen, not by nobody
    assert v2 / (v1 + v2) == pytest.approx(0.5, abs=0.03)
    cluster.error = None
    await workload.step(1)
    assert status_of(workload)["cluster_error"] is None


async def test_same_seed_same_metrics() -> None:
    first, _ = make({"v1": 3, "v2": 1}, seed=42)
    second, _ = make({"v1": 3, "v2": 1}, seed=42)
    other, _ = make({"v1": 3, "v2": 1}, seed=43)
    for w in (first, second, other):
        await run_for(w, 30, dt=0.5)
    assert first.metrics_text() == second.metrics_text() != other.metrics_text()


async def test_start_ticks_until_stop() -> None:
    cluster = InMemoryCluster()
    cluster.set_versions(NS, SVC, [VersionState("v1", "web-v1", 1)])
    workload = Workload(cluster, seed=1, tick_s=0.01)
    workload.add_service(ServiceSpec(NS, SVC, Constant(1000)))
    workload.start()
    assert workload.running
    await eventually(lambda: total(workload, "v1") > 0, what="the loop to count requests")
    await workload.stop()
    assert not workload.running
    stopped_at = total(workload, "v1")
    await asyncio.sleep(0.05)  # not a wait: five ticks' time, in which a loop still running would count
    assert total(workload, "v1") == stopped_at


def test_poisson_mean_and_variance() -> None:
    rng = random.Random(5)
    for mean in (0.3, 4.0, 40.0, 400.0):
        draws = [poisson(rng, mean) for _ in range(20_000)]
        assert statistics.fmean(draws) == pytest.approx(mean, rel=0.03)
        assert statistics.variance(draws) == pytest.approx(mean, rel=0.08)
        assert draws.count(0) / len(draws) == pytest.approx(math.exp(-mean), abs=0.005)
    assert poisson(rng, 0) == 0


# ---- traces ----------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_constant_and_replay_rates() -> None:
    assert Constant(7).rate_at(1e6) == 7
    replay = Replay((60.0, 120.0, 0.0), speedup=6)  # a trace minute lasts 10 s
    assert [replay.rate_at(t) for t in (0, 9.9, 10, 25, 30, 35, 45)] == [1, 1, 2, 0, 1, 1, 2]  # loops
    hold = Replay((60.0, 120.0, 30.0), speedup=6, at_end="hold", scale=2)
    assert [hold.rate_at(t) for t in (0, 29, 30, 1000)] == [2, 1, 1, 1]
    assert Replay((60.0,)).rate_at(-5) == 1
    with pytest.raises(ValueError):
        Replay(())
    with pytest.raises(ValueError):
        Replay((1.0,), speedup=0)


def test_scale_for_a_peak_rate() -> None:
    assert scale_for([600, 1200], scale=None, peak_rps=4) == pytest.approx(0.2)
    assert scale_for([600], scale=3, peak_rps=None) == 3
    with pytest.raises(ValueError, match="not both"):
        scale_for([600], scale=1, peak_rps=1)
    with pytest.raises(ValueError, match="no requests"):
        scale_for([0, 0], scale=None, peak_rps=1)


def test_per_minute_fills_gaps() -> None:
    assert per_minute([5, 5, 7, 5]) == [3, 0, 1]
    assert per_minute([]) == []


def test_read_azure_llm(tmp_path: Path) -> None:
    trace = write(
        tmp_path / "azure.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:59.9999999,1,1\n"
        "2023-11-16 18:16:00.0000000,1,1\n"
        "2023-11-16 18:18:30.1,1,1\n",
    )
    assert read_azure_llm(trace) == [2, 1, 0, 1]
    assert read_trace(trace) == [2, 1, 0, 1]
    bad = write(tmp_path / "bad.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n")
    with pytest.raises(ValueError, match="bad.csv:2"):
        read_azure_llm(bad)


def test_read_servegen(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    write(folder / "chunk-0-trace.csv", "0,0.5,1.0,Gamma,1,1\n600,0,0,,0,0\n1200,1.0,2.0,Weibull,1,1\n")
    write(folder / "chunk-1-trace.csv", "0,0.25,1.0,Gamma,1,1\n")
    both = read_servegen(folder)
    assert len(both) == 30
    assert both[:10] == [45.0] * 10 and both[10:20] == [0.0] * 10 and both[20:] == [60.0] * 10
    assert read_trace(folder) == both
    assert read_trace(folder / "chunk-1-trace.csv") == [15.0] * 10
    with pytest.raises(ValueError, match="whole minutes"):
        read_servegen(write(tmp_path / "odd.csv", "30,1,1,Gamma,1,1\n"))


def test_read_minute_csv(tmp_path: Path) -> None:
    trace = write(tmp_path / "rpm.csv", "minute,requests,prompt_tokens\n2,30,\n0,10.5,5\n")
    assert read_minute_csv(trace) == [10.5, 0, 30]
    assert read_trace(trace) == [10.5, 0, 30]
    with pytest.raises(ValueError, match="minute,requests"):
        read_minute_csv(write(tmp_path / "other.csv", "when,count\n0,1\n"))
    with pytest.raises(ValueError, match="rpm2.csv:2"):
        read_minute_csv(write(tmp_path / "rpm2.csv", "minute,requests\none,1\n"))
    with pytest.raises(ValueError, match="not a known trace format"):
        read_trace(write(tmp_path / "x.csv", "a,b\n"))


def test_no_trace_spans_more_than_a_year(tmp_path: Path) -> None:
    """Every minute up to a trace's last is a list element: a far-off row is refused, not allocated."""
    with pytest.raises(ValueError, match="far.csv:2: window_start_s must be within a year"):
        read_servegen(write(tmp_path / "far.csv", "0,1,1,Gamma,1,1\n6000000000,1,1,Gamma,1,1\n"))
    with pytest.raises(ValueError, match="whole minutes"):
        read_servegen(write(tmp_path / "inf.csv", "0,inf,1,Gamma,1,1\n"))
    with pytest.raises(ValueError, match="at most a year"):
        read_minute_csv(write(tmp_path / "far-rpm.csv", "minute,requests\n0,1\n1000000000000,1\n"))
    azure = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\n9999-11-16 18:15:46,1,1\n"
    with pytest.raises(ValueError, match="at most a year"):
        read_azure_llm(write(tmp_path / "far-azure.csv", azure))
    year = read_minute_csv(write(tmp_path / "year.csv", f"minute,requests\n{MAX_TRACE_MINUTES - 1},1\n"))
    assert len(year) == MAX_TRACE_MINUTES


def test_real_azure_traces_match_their_readme() -> None:
    conv = read_trace(needs(AZURE_CONV))
    assert (len(conv), sum(conv), max(conv)) == (60, 19_366, 502)
    code = read_trace(needs(AZURE_CODE))
    assert (len(code), sum(code), max(code)) == (58, 8_819, 585)
    assert 0 in code  # the coding service is on/off


def test_real_servegen_traces_match_their_readme() -> None:
    small = read_trace(needs(SERVEGEN_SMALL))
    assert len(small) == 20_160  # 14 days
    assert statistics.fmean(small) == pytest.approx(70_464, rel=1e-4)
    assert max(small) == pytest.approx(232_771, rel=1e-4)
    one = read_trace(SERVEGEN_SMALL / "chunk-0-trace.csv")
    assert len(one) == 20_160 and 0 < max(one) < max(small)


def test_a_real_trace_round_trips_through_a_minute_csv(tmp_path: Path) -> None:
    conv = read_trace(needs(AZURE_CONV))
    rows = "".join(f"{m},{n:g}\n" for m, n in enumerate(conv))
    assert read_trace(write(tmp_path / "conv_rpm.csv", "minute,requests\n" + rows)) == conv


async def test_trace_replay_follows_the_trace_minute_shape(tmp_path: Path) -> None:
    trace = write(tmp_path / "rpm.csv", "minute,requests\n0,1200\n1,6000\n2,2400\n")  # 20, 100, 40 rps
    cluster = InMemoryCluster()
    cluster.set_versions(NS, SVC, [VersionState("v1", "web-v1", 10)])
    workload = Workload(cluster, seed=3)
    workload.add_service(ServiceSpec(NS, SVC, Replay.from_file(trace, speedup=6)))  # a minute per 10 s
    per_window, offered = [], []
    for _ in range(4):
        before = total(workload, "v1")
        await run_for(workload, 10, dt=0.5)
        per_window.append(total(workload, "v1") - before)
        offered.append(gauge(workload, "lab_workload_offered_rps"))
    assert offered == [20, 100, 40, 20]  # and then it loops
    for counted, rps in zip(per_window, offered, strict=True):
        assert abs(counted - rps * 10) < 4 * math.sqrt(rps * 10)  # within 4 sd of a Poisson count


async def test_a_real_trace_drives_the_offered_rate() -> None:
    replay = Replay.from_file(needs(AZURE_CODE), speedup=60, peak_rps=50)  # a trace minute per second
    cluster = InMemoryCluster()
    cluster.set_versions(NS, SVC, [VersionState("v1", "web-v1", 10)])
    workload = Workload(cluster, seed=3)
    workload.add_service(ServiceSpec(NS, SVC, replay))
    seen = []
    for _ in range(len(replay.per_minute)):
        await workload.step(1.0)
        seen.append(gauge(workload, "lab_workload_offered_rps"))
    assert max(seen) == pytest.approx(50)
    assert seen == pytest.approx([n / max(replay.per_minute) * 50 for n in read_trace(AZURE_CODE)])


# ---- metrics ---------------------------------------------------------------------------------------------


async def test_metrics_exposition_parses_and_agrees_with_status() -> None:
    workload, _ = make({"v1": 2, "v2": 1}, capacity_per_replica_rps=20)  # short of capacity: 503s too
    workload.set_fault(NS, SVC, "v2", Fault(error_share=0.5))
    await run_for(workload, 30)
    assert all(requests(workload)[v, code] > 0 for v in ("v1", "v2") for code in ("200", "503"))
    families = {f.name: f for f in text_string_to_metric_families(workload.metrics_text().decode())}
    assert families["http_requests"].type == "counter"
    assert "simulated" in families["http_requests"].documentation
    histogram = families["http_request_duration_seconds"]
    assert histogram.type == "histogram"
    assert {"namespace", "service", "version"} == set(histogram.samples[-1].labels)
    for name in ("lab_workload_offered_rps", "lab_workload_ready_replicas", "lab_workload_utilization_ratio"):
        assert families[name].type == "gauge"
    for version in status_of(workload)["versions"]:
        name = version["version"]
        for code, n in version["requests"].items():
            assert requests(workload)[name, code] == n
        cumulative = buckets(workload, name)
        assert cumulative == sorted(cumulative, key=lambda b: b[1])  # buckets never decrease
        assert (
            cumulative[0][0] == 0.005
            and cumulative[-2][0] == 10
            and cumulative[-1][1] == total(workload, name)
        )


# ---- the HTTP app ----------------------------------------------------------------------------------------


@pytest.fixture
async def admin() -> AsyncIterator[tuple[Workload, httpx.AsyncClient]]:
    workload, _ = make({"v1": 5, "v2": 5})
    transport = httpx.ASGITransport(app=create_app(workload, run_loop=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://workload") as client:
        yield workload, client


FAULT = {"namespace": NS, "service": SVC, "version": "v2", "error_share": 1.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"error_share": 1.5}, "error_share: Input should be less than or equal to 1"),
        ({"cpu_saturation": 0.5}, "cpu_saturation: Input should be greater than or equal to 1"),
        ({"added_latency_ms": -5}, "added_latency_ms"),
        ({"version": None}, "version"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"service": "api"}, "does not simulate demo/api; it simulates: demo/web"),
    ],
)
async def test_put_faults_rejects_bad_input(
    admin: tuple[Workload, httpx.AsyncClient], change: dict[str, object], message: str
) -> None:
    workload, client = admin
    body = {k: v for k, v in {**FAULT, **change}.items() if v is not None}
    response = await client.put("/admin/faults", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert workload.faults() == []


async def test_put_faults_needs_json(admin: tuple[Workload, httpx.AsyncClient]) -> None:
    _, client = admin
    response = await client.put("/admin/faults", content=b"error_share=1")
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]


async def test_faults_set_and_cleared_over_http(admin: tuple[Workload, httpx.AsyncClient]) -> None:
    workload, client = admin
    response = await client.put("/admin/faults", json=FAULT)
    assert response.status_code == 200, response.text
    assert response.json()["faults"] == [{**FAULT, "added_latency_ms": 0.0, "cpu_saturation": 1.0}]
    await run_for(workload, 20)
    assert requests(workload)["v2", "500"] == total(workload, "v2") > 0
    assert requests(workload)["v1", "500"] == 0

    bad = await client.delete("/admin/faults", params={"version": "v2"})
    assert bad.status_code == 422 and "give namespace and service" in bad.json()["detail"]
    cleared = await client.delete("/admin/faults", params={"namespace": NS, "service": SVC, "version": "v2"})
    assert cleared.json() == {"cleared": 1, "faults": []}
    errors = requests(workload)["v2", "500"]
    await run_for(workload, 20)
    assert requests(workload)["v2", "500"] == errors
    status = (await client.get("/admin/status")).json()
    assert status["simulated"] is True and status["services"][0]["faults"] == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"source": {"kind": "constant", "rps": 5}, "capacity_per_replica_rps": 0},
            "capacity_per_replica_rps",
        ),
        ({"source": {"kind": "constant", "rps": -1}}, "source.constant.rps"),
        ({"source": {"kind": "poisson", "rps": 1}}, "source"),
        ({"source": {"kind": "trace", "path": "/no/such/trace.csv"}}, "cannot use this trace"),
        ({"source": {"kind": "trace", "path": "x.csv", "scale": 1, "peak_rps": 2}}, "not both"),
        ({}, "source: Field required"),
    ],
)
async def test_put_services_rejects_bad_input(
    admin: tuple[Workload, httpx.AsyncClient], body: dict[str, object], message: str
) -> None:
    workload, client = admin
    response = await client.put("/admin/services", json={"namespace": NS, "service": "api", **body})
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert [s.service for s in workload.services()] == [SVC]


async def test_services_registered_and_removed_over_http(
    admin: tuple[Workload, httpx.AsyncClient], tmp_path: Path
) -> None:
    workload, client = admin
    trace = write(tmp_path / "rpm.csv", "minute,requests\n0,60\n1,120\n")
    body = {
        "namespace": NS,
        "service": SVC,
        "source": {"kind": "trace", "path": str(trace), "speedup": 60, "peak_rps": 10},
        "capacity_per_replica_rps": 5,
    }
    response = await client.put("/admin/services", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["source"]["peak_rps"] == pytest.approx(10)
    await workload.step(1)
    assert gauge(workload, "lab_workload_offered_rps") == pytest.approx(5)  # trace minute 0: half the peak
    await workload.step(1)
    assert gauge(workload, "lab_workload_offered_rps") == pytest.approx(10)
    assert gauge(workload, "lab_workload_utilization_ratio", "v1") == pytest.approx(10 / 2 / 25)

    missing = await client.delete("/admin/services", params={"namespace": NS})
    assert missing.status_code == 422 and missing.json()["detail"] == "query.service: Field required"
    assert (
        await client.delete("/admin/services", params={"namespace": NS, "service": "api"})
    ).status_code == 404
    assert (
        await client.delete("/admin/services", params={"namespace": NS, "service": SVC})
    ).status_code == 200
    assert "http_requests_total{" not in (await client.get("/metrics")).text


async def test_the_app_lifespan_starts_and_stops_the_loop() -> None:
    workload, _ = make({"v1": 1})
    app = create_app(workload)
    async with app.router.lifespan_context(app):
        assert workload.running
    assert not workload.running
    workload.start()  # started by its owner: the app leaves it running
    async with app.router.lifespan_context(app):
        pass
    assert workload.running
    await workload.stop()


async def test_served_app_runs_the_loop_in_its_lifespan() -> None:
    cluster = InMemoryCluster()
    cluster.set_versions(NS, SVC, [VersionState("v1", "web-v1", 2)])
    workload = Workload(cluster, seed=1, tick_s=0.02)
    workload.add_service(ServiceSpec(NS, SVC, Constant(500)))
    with serve_in_thread(create_app(workload)) as url:
        async with httpx.AsyncClient(base_url=url) as client:

            async def counted() -> bool:
                families = text_string_to_metric_families((await client.get("/metrics")).text)
                return any(
                    s.name == "http_requests_total" and s.value > 0 for f in families for s in f.samples
                )

            await eventually(counted, what="the served app's loop to count requests")
            assert (await client.get("/admin/status")).json()["running"] is True
    assert not workload.running


def test_the_latency_models_p99_is_the_lognormals_when_idle_and_about_double_at_a_quarter_load() -> None:
    """What a "+50% p99" fault is sized against: at the load the lab's rollouts run (25% per replica) the
    queueing wait doubles the tail, so half the idle p99 added is a +24% regression, not +50%."""
    idle = latency_quantile_s(0.99, median_s=0.05, sigma=0.4, utilization=0.0)
    lognormal_p99 = 0.05 * math.exp(NormalDist().inv_cdf(0.99) * 0.4)
    assert idle == pytest.approx(lognormal_p99, rel=0.02)
    busy = latency_quantile_s(0.99, median_s=0.05, sigma=0.4, utilization=0.25)
    assert 2.0 < busy / idle < 2.4
    assert latency_quantile_s(0.5, median_s=0.05, sigma=0.4, utilization=0.0) == pytest.approx(0.05, rel=0.02)
