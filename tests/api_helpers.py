"""Small helpers shared by the black-box API suites (``tests/test_api_*.py``): runs and errors.

Reading a run's SSE stream is in ``tests/sse_frames.py``.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.waiting import wait_until

TERMINAL = ("success", "error", "stopped")


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> str:
    """The response is ``status`` with exactly ``{"error": {"code", "message"}}``; the message."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str), body
    assert body["error"]["code"], body
    assert isinstance(body["error"]["message"], str), body
    assert body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    message: str = body["error"]["message"]
    return message


def start(client: httpx.Client, agent: str, **input_dict: Any) -> str:
    resp = client.post("/runs", json={"agent": agent, "input_dict": input_dict})
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["run_id"]
    return run_id


def get_run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    resp = client.get(f"/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def wait_finished(client: httpx.Client, run_id: str, timeout: float = 15.0) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = get_run(client, run_id)
        return run if run["status"] in TERMINAL else None

    result: dict[str, Any] = wait_until(finished, timeout, f"run {run_id} to finish")
    return result


def finished_and_running(client: httpx.Client, **echo_input: Any) -> dict[str, str]:
    """Start one run to its end and one that lasts: ``{"finished": id, "running": id}``.

    Module fixtures keep such a pair to check that what a test does to other
    runs (or users, or bad requests) leaves both alone.
    """
    finished = start(client, "echo", **echo_input)
    wait_finished(client, finished)
    running = start(client, "sleeper", seconds=300)
    return {"finished": finished, "running": running}
