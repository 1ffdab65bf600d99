"""Every error code with a bad input that triggers it, in the one error shape.

After each bad request the runs already there are untouched.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_helpers import assert_error, finished_and_running, get_run, start, wait_finished
from tests.live_server import LiveServer, LiveServerFactory, make_settings
from tests.sse_frames import done_of, iter_frames, open_stream

pytestmark = pytest.mark.server

MAX_BODY = 2048
UNKNOWN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    return live_server(max_body_bytes=MAX_BODY, max_live_runs_per_user=2)


@pytest.fixture(scope="module")
def existing(live: LiveServer) -> dict[str, str]:
    """Alice's runs that every bad request must leave alone: one finished, one live."""
    with live.client("alice") as alice:
        return finished_and_running(alice, keep="me")


def _snapshot(live: LiveServer) -> dict[str, Any]:
    with live.client("alice") as alice:
        listed = alice.get("/runs", params={"limit": 1000}).json()["runs"]
        details = {r["run_id"]: get_run(alice, r["run_id"]) for r in listed}
    return {
        run_id: (d["status"], d["result"], d["error"], d["event_count"], d["input_dict"])
        for run_id, d in details.items()
    }


@pytest.fixture
def untouched(live: LiveServer, existing: dict[str, str]) -> Iterator[None]:
    before = _snapshot(live)
    assert before[existing["running"]][0] == "running"
    assert before[existing["finished"]][0] == "success"
    yield
    assert _snapshot(live) == before


# --------------------------------------------------------------------------
# 401, 403, 404, 405, 409


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Token alice-token"}],
    ids=["missing", "wrong", "malformed"],
)
def test_401(live: LiveServer, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=live.base_url, headers=headers) as anon:
        assert_error(anon.post("/runs", json={"agent": "echo"}), 401, "unauthorized")
        assert_error(anon.get("/runs"), 401, "unauthorized")


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
def test_403(live: LiveServer, existing: dict[str, str]) -> None:
    with live.client("bob") as bob:
        assert_error(bob.post(f"/runs/{existing['running']}/stop"), 403, "forbidden")
        assert_error(bob.delete(f"/runs/{existing['finished']}"), 403, "forbidden")
        assert_error(bob.get("/ops/registry"), 403, "forbidden")


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
def test_404(alice: httpx.Client) -> None:
    assert_error(alice.get(f"/runs/{UNKNOWN}"), 404, "run_not_found")
    assert_error(alice.delete(f"/runs/{UNKNOWN}"), 404, "run_not_found")
    message = assert_error(alice.get("/no/such/route"), 404, "not_found")
    assert "/no/such/route" in message


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
def test_405_keeps_allow(alice: httpx.Client) -> None:
    resp = alice.put("/runs", json={})
    assert_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["allow"]


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
def test_409(alice: httpx.Client, existing: dict[str, str]) -> None:
    message = assert_error(alice.delete(f"/runs/{existing['running']}"), 409, "still_running")
    assert "stop it first" in message
    message = assert_error(alice.post(f"/runs/{existing['finished']}/stop"), 409)
    assert "success" in message


# --------------------------------------------------------------------------
# 413


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
def test_413_declared_length_over_the_limit(alice: httpx.Client) -> None:
    body = {"agent": "echo", "input_dict": {"blob": "x" * MAX_BODY}}
    message = assert_error(alice.post("/runs", json=body), 413, "payload_too_large")
    assert str(MAX_BODY) in message


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
def test_413_chunked_body_over_the_limit(alice: httpx.Client) -> None:
    payload = json.dumps({"agent": "echo", "input_dict": {"blob": "y" * (3 * MAX_BODY)}}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        for i in range(0, len(payload), 512):
            yield payload[i : i + 512]

    resp = alice.post("/runs", content=chunks(), headers={"Content-Type": "application/json"})
    assert resp.request.headers.get("transfer-encoding") == "chunked"
    assert_error(resp, 413, "payload_too_large")


@pytest.mark.timeout(20)
def test_a_body_just_under_the_limit_is_accepted(alice: httpx.Client) -> None:
    size = len(json.dumps({"agent": "echo", "input_dict": {"blob": ""}}).encode())
    blob = "z" * (MAX_BODY - size - 10)
    run_id = start(alice, "echo", blob=blob)
    assert wait_finished(alice, run_id)["result"] == {"blob": blob}
    assert wait_finished(alice, run_id)["status"] == "success"
    assert alice.delete(f"/runs/{run_id}").status_code == 204


# --------------------------------------------------------------------------
# 422 names the field


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input_dict": {}}, "agent"),
        ({"agent": 5}, "agent"),
        ({"agent": ""}, "agent"),
        ({"agent": "echo", "input_dict": "x"}, "input_dict"),
        ({"agent": "echo", "input_dict": [1, 2]}, "input_dict"),
        ({"agent": "echo", "max_duration_s": "soon"}, "max_duration_s"),
        ({"agent": "echo", "max_duration_s": -1}, "max_duration_s"),
        ({"agent": "echo", "restart": {"max_restarts": "x"}}, "restart.max_restarts"),
        ({"agent": "echo", "restart": {"max_restarts": 1, "bogus": 1}}, "restart.bogus"),
        ({"agent": "echo", "agnet": "typo"}, "agnet"),
        ([{"agent": "echo"}], "request body"),
    ],
)
def test_422_names_the_field(alice: httpx.Client, body: Any, field: str) -> None:
    message = assert_error(alice.post("/runs", json=body), 422, "validation_error")
    assert field in message, message


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
def test_422_unknown_agent_names_it_and_the_known_ones(alice: httpx.Client) -> None:
    resp = alice.post("/runs", json={"agent": "no-such-agent", "input_dict": {}})
    message = assert_error(resp, 422, "unknown_agent")
    assert "no-such-agent" in message
    assert "ticker" in message


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"status": "finished"}, "status"),
    ],
)
def test_422_list_query(alice: httpx.Client, params: dict[str, Any], field: str) -> None:
    message = assert_error(alice.get("/runs", params=params), 422, "validation_error")
    assert f"query parameter '{field}'" in message, message


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
def test_422_json_without_a_json_content_type(alice: httpx.Client) -> None:
    resp = alice.post("/runs", content=b'{"agent": "echo"}', headers={"Content-Type": "text/plain"})
    assert "Content-Type: application/json" in assert_error(resp, 422, "validation_error")


# --------------------------------------------------------------------------
# 400


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize("raw", [b"{bad", b'{"agent": "echo",}', b"", b"\xff\xfe"])
def test_400_malformed_json(alice: httpx.Client, raw: bytes) -> None:
    resp = alice.post("/runs", content=raw, headers={"Content-Type": "application/json"})
    if raw == b"":
        # An empty body is "no body": the required field is what is missing.
        assert_error(resp, 422, "validation_error")
        return
    assert "not valid JSON" in assert_error(resp, 400, "malformed_json")


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
@pytest.mark.parametrize(
    "cursor",
    [
        "zzz",
        "%%%",
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
        base64.urlsafe_b64encode(b'["yesterday", "abc"]').decode(),
        base64.urlsafe_b64encode(b"not json").decode(),
    ],
)
def test_400_bad_list_cursor(alice: httpx.Client, cursor: str) -> None:
    message = assert_error(alice.get("/runs", params={"cursor": cursor}), 400, "invalid_request")
    assert "cursor" in message


@pytest.mark.timeout(20)
@pytest.mark.usefixtures("untouched")
def test_400_bad_stream_cursor(alice: httpx.Client, existing: dict[str, str]) -> None:
    run_id = existing["running"]
    assert_error(alice.get(f"/runs/{run_id}/stream?after=abc"), 400, "invalid_cursor")
    resp = alice.get(f"/runs/{run_id}/stream", headers={"Last-Event-ID": "-1"})
    assert_error(resp, 400, "invalid_cursor")
    assert_error(alice.get(f"/runs/{run_id}/stream?after={2**60}"), 400, "invalid_cursor")


# --------------------------------------------------------------------------
# 429


@pytest.mark.timeout(20)
def test_429_over_the_per_user_live_cap(
    live: LiveServer, alice: httpx.Client, existing: dict[str, str]
) -> None:
    before = _snapshot(live)
    second = start(alice, "sleeper", seconds=300)  # the existing sleeper is the first
    resp = alice.post("/runs", json={"agent": "echo", "input_dict": {}})
    message = assert_error(resp, 429, "too_many_live_runs")
    assert "2" in message
    after = _snapshot(live)
    assert set(after) == set(before) | {second}  # the refused run was never created
    assert {k: v for k, v in after.items() if k != second} == before

    with live.client("bob") as bob:  # the cap is per user
        bobs = start(bob, "echo", y=1)
        assert wait_finished(bob, bobs)["status"] == "success"

    assert alice.post(f"/runs/{second}/stop").status_code == 202
    assert wait_finished(alice, second)["status"] == "stopped"
    third = start(alice, "echo", z=1)  # room again
    assert wait_finished(alice, third)["status"] == "success"
    for run_id in (second, third):
        assert alice.delete(f"/runs/{run_id}").status_code == 204
    assert _snapshot(live) == before


# --------------------------------------------------------------------------
# 503


@pytest.mark.timeout(30)
def test_503_while_draining_and_live_runs_are_stopped_with_the_reason(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, shutdown_grace_s=0.5)
    with LiveServer(settings) as server, server.client("alice") as alice:
        run_id = start(alice, "sleeper", seconds=300)
        finished = start(alice, "echo", a=1)
        wait_finished(alice, finished)
        with open_stream(alice, run_id) as es:
            it = iter_frames(es)
            assert [next(it).event, next(it).event] == ["run", "sleeping"]
            gateway = server.gateway
            drained = asyncio.run_coroutine_threadsafe(gateway.drain(2.0), gateway.runtime.loop)
            message = assert_error(
                alice.post("/runs", json={"agent": "echo", "input_dict": {}}),
                503,
                "shutting_down",
            )
            assert "shutting down" in message
            ready = alice.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"
            # Reads still work while draining, and nothing changed yet.
            assert get_run(alice, run_id)["status"] == "running"
            assert get_run(alice, finished)["status"] == "success"
            rest = list(it)
        drained.result(timeout=15)
        assert done_of(rest) == {
            "status": "stopped",
            "result": None,
            "error": "server shutdown",
        }
        run = get_run(alice, run_id)
        assert (run["status"], run["error"]) == ("stopped", "server shutdown")
        assert get_run(alice, finished)["status"] == "success"
