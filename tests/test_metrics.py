"""``GET /metrics`` against a real server: who may read it, and that the numbers move.

The text is parsed with ``prometheus_client``'s own parser, so a malformed
exposition fails here as it would fail a real Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runyard.web.version import package_version
from tests.api_helpers import assert_error, start, wait_finished
from tests.live_server import LiveServer, LiveServerFactory
from tests.waiting import wait_until

pytestmark = pytest.mark.server

METRICS_TOKEN = "scrape-0123456789abcdef"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Every sample of a scrape, keyed by (name, sorted labels)."""


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    return live_server(metrics_token=METRICS_TOKEN)


def scrape(live: LiveServer) -> Samples:
    """Every sample, keyed by (name, sorted labels)."""
    resp = httpx.get(
        f"{live.base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(
    live: LiveServer, holds: Callable[[Samples], bool], what: str, timeout: float = 10
) -> Samples:
    """Scrape until ``holds(samples)``; the samples that satisfied it."""

    def attempt() -> Samples | None:
        samples = scrape(live)
        return samples if holds(samples) else None

    return wait_until(attempt, timeout, what)


@pytest.mark.timeout(20)
def test_metrics_need_an_admin_or_the_metrics_token(live: LiveServer) -> None:
    url = f"{live.base_url}/metrics"
    assert_error(httpx.get(url), 401, "unauthorized")
    assert_error(httpx.get(url, headers={"Authorization": "Bearer wrong-token"}), 401)
    with live.client("alice") as alice:
        message = assert_error(alice.get("/metrics"), 403, "forbidden")
    assert "RUNYARD_METRICS_TOKEN" in message
    with live.client("root") as root:
        resp = root.get("/metrics")
    assert resp.status_code == 200
    assert "runyard_runs_started_total" in resp.text
    # The metrics token opens /metrics and nothing else.
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    for path in ("/runs", "/agents", "/ops/registry", "/openapi.json", "/auth/session"):
        assert_error(httpx.get(f"{live.base_url}{path}", headers=scraper), 401, "unauthorized")
    resp = httpx.post(f"{live.base_url}/auth/session", headers=scraper)
    assert_error(resp, 401, "unauthorized")


@pytest.mark.timeout(30)
def test_runs_events_and_the_store_are_counted(live: LiveServer, alice: httpx.Client) -> None:
    before = scrape(live)
    run_id = start(alice, "ticker", n=5, interval=0.2)
    with alice.stream("GET", f"/runs/{run_id}/stream") as stream:
        body = "".join(stream.iter_text())
    assert "event: done" in body
    wait_finished(alice, run_id)
    success = value(before, "runyard_runs_finished_total", status="success")
    after = scrape_until(
        live,
        lambda s: value(s, "runyard_runs_finished_total", status="success") >= success + 1,
        "the finished run to be counted",
    )

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("runyard_runs_started_total") >= 1
    assert grew("runyard_events_emitted_total") >= 6  # five ticks and done
    # The stream joined within a few ms of the start: the ticks reached it live.
    assert grew("runyard_events_delivered_total") >= 5
    assert grew("runyard_store_commit_seconds_count") >= 1
    commits = value(after, "runyard_store_commit_seconds_count")
    assert value(after, "runyard_store_commit_seconds_bucket", le="+Inf") == commits
    assert value(after, "runyard_store_commit_seconds_sum") > 0
    assert ("runyard_store_backlog", ()) in after
    assert value(after, "runyard_store_errors_total", op="write") == 0
    assert ("runyard_event_loop_lag_seconds_count", ()) in after
    info = [labels for name, labels in after if name == "runyard_info"]
    assert info, "no runyard_info"
    assert dict(info[0])["version"] == package_version()
    assert ("process_resident_memory_bytes", ()) in after


@pytest.fixture
def sleeper(alice: httpx.Client) -> Iterator[str]:
    run_id = start(alice, "sleeper", seconds=60)
    yield run_id
    alice.post(f"/runs/{run_id}/stop")  # 409 if the test stopped it already


@pytest.mark.timeout(30)
def test_live_runs_streams_subscribers_and_stops_are_gauged(
    live: LiveServer, alice: httpx.Client, sleeper: str
) -> None:
    before = scrape(live)
    sleepers = value(before, "runyard_live_runs", agent="sleeper")
    assert sleepers >= 1
    with alice.stream("GET", f"/runs/{sleeper}/stream") as stream:
        lines = stream.iter_lines()  # kept: a dropped iterator closes the stream
        assert next(lines) == "event: run"
        scrape_until(
            live,
            lambda s: (
                value(s, "runyard_open_streams", kind="run") >= 1
                and value(s, "runyard_subscribers") >= 1
            ),
            "the open stream and its subscriber to be gauged",
        )
    scrape_until(
        live,
        lambda s: (
            value(s, "runyard_open_streams", kind="run") == 0
            and value(s, "runyard_subscribers") == 0
        ),
        "the closed stream to leave the gauges",
    )
    resp = alice.post(f"/runs/{sleeper}/stop")
    assert resp.status_code == 202, resp.text
    wait_finished(alice, sleeper)
    after = scrape_until(
        live,
        lambda s: value(s, "runyard_live_runs", agent="sleeper") == sleepers - 1,
        "the stopped run to leave the live gauge",
    )
    stops = value(after, "runyard_runs_stopped_total") - value(before, "runyard_runs_stopped_total")
    assert stops == 1
    assert value(after, "runyard_runs_finished_total", status="stopped") >= 1


@pytest.mark.timeout(30)
def test_the_run_code_pool_is_gauged(live: LiveServer) -> None:
    samples = scrape_until(
        live,
        lambda s: value(s, "runyard_code_pool_spawns_total") >= 1,
        "the run-code pool to pre-start a child",
        timeout=20,
    )
    assert value(samples, "runyard_code_pool_size") >= 1
    assert value(samples, "runyard_code_pool_spawn_seconds_total") > 0
    assert ("runyard_code_pool_idle_workers", ()) in samples
