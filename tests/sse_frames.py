"""A run's SSE stream as the black-box suites read it: frames over httpx-sse.

``open_stream``/``frames`` connect to ``/runs/{run_id}/stream`` (optionally
resuming with ``after`` or ``Last-Event-ID``); ``trace_seqs`` and ``done_of``
read the trace and the final ``done`` frame out of a list of frames.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, connect_sse


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
