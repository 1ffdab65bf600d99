"""Small helpers shared by the black-box API suites (``tests/test_api_*.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from tests.waiting import wait_until

TERMINAL = ("success", "error", "stopped")


@dataclass(frozen=True)
class Frame:
    event: str
    id: str
    data: Any

    @property
    def seq(self) -> int:
        return int(self.id)


def to_frame(sse: ServerSentEvent) -> Frame:
    return Frame(sse.event, sse.id, json.loads(sse.data) if sse.data else None)


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


def open_stream(
    client: httpx.Client,
    run_id: str,
    *,
    after: str | int | None = None,
    last_event_id: str | int | None = None,
) -> Any:
    """``connect_sse`` on ``/runs/{run_id}/stream`` with an optional resume cursor."""
    params = {} if after is None else {"after": str(after)}
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    return connect_sse(client, "GET", f"/runs/{run_id}/stream", params=params, headers=headers)


def frames(
    client: httpx.Client,
    run_id: str,
    *,
    after: str | int | None = None,
    last_event_id: str | int | None = None,
    limit: int | None = None,
) -> list[Frame]:
    """Frames of one connection: all of them, or the first ``limit`` then disconnect."""
    out: list[Frame] = []
    with open_stream(client, run_id, after=after, last_event_id=last_event_id) as es:
        assert es.response.status_code == 200, es.response.read()
        for frame in iter_frames(es):
            out.append(frame)
            if limit is not None and len(out) >= limit:
                break
    return out


def iter_frames(es: Any) -> Iterator[Frame]:
    """Our frames, skipping httpx-sse's empty pseudo-events.

    httpx-sse dispatches an empty ``message`` carrying the last id after a
    comment line (a heartbeat); an EventSource would not (empty data is never
    dispatched), and every frame runyard sends has data.
    """
    for sse in es.iter_sse():
        if sse.data == "" and sse.event == "message":
            continue
        yield to_frame(sse)


def trace_seqs(fs: list[Frame]) -> list[int]:
    """The seqs of the trace frames (everything with an id except lagged/closing notices)."""
    return [f.seq for f in fs if f.id and f.event not in ("lagged", "closing")]


def done_of(fs: list[Frame]) -> dict[str, Any]:
    """The status/result/error the last (``done``) frame carries."""
    assert fs, "no frames"
    last = fs[-1]
    assert last.event == "done", [f.event for f in fs[-3:]]
    assert last.data["type"] == "done", last.data
    assert last.data["seq"] == last.seq, last.data
    payload: dict[str, Any] = last.data["data"]
    assert set(payload) == {"status", "result", "error"}, payload
    return payload
