"""The full run record over the API, against a real server (SQLite store):
``output_schema`` on both start routes, ``schema_warnings`` and ``ops_log`` in
``GET /runs/{id}`` and the ``done`` frame, and a run-code run's kept code
(its owner's only)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from runyard.actors.context import RunContext
from tests.api_helpers import assert_error, get_run, wait_finished
from tests.live_server import LiveServer, LiveServerFactory
from tests.runtime_helpers import catalog_with
from tests.sse_frames import Frame, frames

pytestmark = pytest.mark.server

SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        }
    },
    "required": ["items"],
}


async def spender(input_dict: dict[str, Any], ctx: RunContext) -> Any:
    """Reports its operations; returns ``input_dict["result"]``."""
    ctx.op("llm", "chat", model="m", tokens=120, cost=0.002, duration_s=1.5)
    ctx.op("llm", "chat", model="m", tokens=30)
    ctx.op("tool", "search", duration_s=0.25)
    return input_dict.get("result")


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    return live_server(app_kwargs={"catalog": catalog_with(spender=spender)})


def start(client: httpx.Client, path: str, body: dict[str, Any]) -> str:
    resp = client.post(path, json=body)
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["run_id"]
    return run_id


def done_frame(client: httpx.Client, run_id: str) -> dict[str, Any]:
    """The data of the run's ``done`` event, read from its SSE stream."""
    last: Frame = frames(client, run_id)[-1]
    assert last.event == "done", last
    data: dict[str, Any] = last.data["data"]
    return data


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/runs", "/agents/run-code/start", "/agents/run-code/stream"])
@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "strin"}, "output_schema is not a valid JSON Schema"),
        ({"properties": {"n": {"minimum": "one"}}}, "(at /properties/n/minimum)"),
        ({"$schema": "https://example.com/mine"}, "unknown $schema"),
        ({"description": "x" * 70_000}, "at most 65536 are accepted"),
    ],
)
def test_an_invalid_output_schema_is_a_422_before_any_run_exists(
    live: LiveServer, path: str, schema: dict[str, Any], words: str
) -> None:
    body: dict[str, Any] = {"output_schema": schema}
    if path == "/runs":
        body["agent"] = "echo"
    else:
        body["code"] = "async def run(input_dict, ctx):\n    return 1\n"
    with live.client("bob") as bob:
        message = assert_error(bob.post(path, json=body), 422, "invalid_output_schema")
        assert words in message, message
        assert bob.get("/runs").json()["runs"] == [], "no run may exist"


@pytest.mark.timeout(30)
def test_a_result_that_does_not_match_is_a_success_with_warnings_in_record_and_done(
    alice: httpx.Client,
) -> None:
    result = {"items": [{"name": "a"}, {"name": 7}, {"name": None}]}
    run_id = start(
        alice,
        "/runs",
        {"agent": "spender", "input_dict": {"result": result}, "output_schema": SCHEMA},
    )
    run = wait_finished(alice, run_id)
    assert run["status"] == "success"
    assert run["error"] is None
    assert run["result"] == result
    assert run["schema_warnings"] == [
        {"path": "/items/1/name", "message": "7 is not of type 'string'"},
        {"path": "/items/2/name", "message": "None is not of type 'string'"},
    ]
    assert run["options"] == {"output_schema": SCHEMA}
    done = done_frame(alice, run_id)
    assert done["status"] == "success"
    assert done["schema_warnings"] == run["schema_warnings"]

    matching = start(
        alice,
        "/runs",
        {"agent": "spender", "input_dict": {"result": {"items": []}}, "output_schema": SCHEMA},
    )
    assert wait_finished(alice, matching)["schema_warnings"] == []
    unchecked = start(alice, "/runs", {"agent": "echo", "input_dict": {"a": 1}})
    plain = wait_finished(alice, unchecked)
    assert plain["schema_warnings"] is None
    assert plain["ops_log"] == {}
    assert set(done_frame(alice, unchecked)) == {"status", "result", "error"}


@pytest.mark.timeout(30)
def test_ops_are_op_events_and_the_record_and_done_frame_sum_them(alice: httpx.Client) -> None:
    run_id = start(alice, "/runs", {"agent": "spender", "input_dict": {"result": 1}})
    run = wait_finished(alice, run_id)
    expected = {
        "llm": {"count": 2, "tokens": 150, "cost": 0.002, "duration_s": 1.5},
        "tool": {"count": 1, "duration_s": 0.25},
    }
    assert run["ops_log"] == expected
    assert [e["data"] for e in run["events"] if e["type"] == "op"][1] == {
        "kind": "llm",
        "name": "chat",
        "model": "m",
        "tokens": 30,
    }
    assert done_frame(alice, run_id)["ops_log"] == expected
    # A reader resuming mid-trace still gets every op after its cursor.
    resumed = frames(alice, run_id, after=2)
    assert [f.data["data"]["kind"] for f in resumed if f.event == "op"] == ["tool"]


CODE = """
async def run(input_dict, ctx):
    ctx.op("llm", "chat", model="m", tokens=100, cost=0.5, duration_s=2.0)
    ctx.op("tool", "fetch")
    return {"items": [{"name": input_dict["name"]}]}
"""


@pytest.mark.timeout(40)
def test_run_code_keeps_its_code_for_its_owner_with_ops_and_schema_warnings(
    live: LiveServer, alice: httpx.Client
) -> None:
    marker = "# kept-code-marker-4f1d"
    code = CODE + marker + "\n"
    run_id = start(
        alice,
        "/agents/run-code/start",
        {
            "code": code,
            "input_dict": {"name": 5},
            "env": {"API_KEY": "secret-value-9b2"},
            "output_schema": SCHEMA,
        },
    )
    run = wait_finished(alice, run_id, timeout=25)
    assert run["status"] == "success", run["error"]
    assert run["options"] == {"output_schema": SCHEMA, "code": code}
    assert run["input_dict"] == {"name": 5}
    assert run["schema_warnings"] == [
        {"path": "/items/0/name", "message": "5 is not of type 'string'"}
    ]
    assert run["ops_log"] == {
        "llm": {"count": 1, "tokens": 100, "cost": 0.5, "duration_s": 2.0},
        "tool": {"count": 1},
    }
    assert "secret-value-9b2" not in json.dumps(run), "env is never kept"

    # Only its owner sees it: not another user, not the list, not the admin views.
    with live.client("bob") as bob:
        assert_error(bob.get(f"/runs/{run_id}"), 403, "forbidden")
    listed = alice.get("/runs").json()["runs"]
    assert any(r["run_id"] == run_id for r in listed)
    assert marker not in alice.get("/runs").text
    with live.client("root") as root:
        registry = root.get("/ops/registry")
        assert registry.status_code == 200, registry.text
        assert marker not in registry.text
        assert marker not in root.get("/runs").text


@pytest.mark.timeout(40)
def test_the_streaming_run_code_start_checks_the_result_too(alice: httpx.Client) -> None:
    body = {"code": CODE, "input_dict": {"name": "ok"}, "output_schema": SCHEMA}
    with alice.stream("POST", "/agents/run-code/stream", json=body) as resp:
        assert resp.status_code == 200
        text = "".join(resp.iter_text())
    run_id = text.split('"run_id":"', 1)[1].split('"', 1)[0]
    done = done_frame(alice, run_id)
    assert done["schema_warnings"] == []
    assert done["ops_log"]["llm"]["count"] == 1
    assert get_run(alice, run_id)["options"]["code"] == CODE


@pytest.mark.timeout(40)
def test_a_run_code_error_shows_the_agents_frames_and_no_server_path(
    alice: httpx.Client,
) -> None:
    code = "async def run(input_dict, ctx):\n    return 1 / 0\n"
    run = wait_finished(alice, start(alice, "/agents/run-code/start", {"code": code}), 25)
    assert run["status"] == "error"
    assert run["error"] == "ZeroDivisionError: division by zero"
    [error] = [e["data"] for e in run["events"] if e["type"] == "error"]
    assert error["traceback"] == (
        "Traceback (most recent call last):\n"
        '  File "<agent>", line 2, in run\n'
        "    return 1 / 0\n"
        "           ~~^~~\n"
        "ZeroDivisionError: division by zero\n"
    )
