"""SSE frames, the response settings, the resume cursor and UTC times (runyard.web.sse, runyard.web.timefmt).

The wire format is checked byte for byte: browsers and the bench client
parse it, and no event type or payload may forge a frame boundary.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sse_starlette import EventSourceResponse

from runyard.actors.errors import InvalidRequest
from runyard.actors.records import Event
from runyard.web.sse import (
    MAX_CURSOR,
    InvalidCursor,
    control_frame,
    heartbeat_event,
    parse_resume_cursor,
    response_kwargs,
    sse_event_frame,
)
from runyard.web.timefmt import iso_utc, iso_utc_or_none
from runyard.web.wire import event_json

HEARTBEAT = b": heartbeat\n\n"


def parse_stream(raw: bytes) -> list[dict[str, Any]]:
    """A minimal EventSource parser (WHATWG rules for LF-separated streams)."""
    events = []
    for block in raw.decode("utf-8").split("\n\n"):
        if not block:
            continue
        fields: dict[str, Any] = {}
        data_lines = []
        for line in block.split("\n"):
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            if name == "data":
                data_lines.append(value)
            else:
                fields[name] = value
        if data_lines:
            fields["data"] = json.loads("\n".join(data_lines))
        if fields:
            events.append(fields)
    return events


# --------------------------------------------------------------------------
# Control frames (built by sse-starlette's ServerSentEvent)


@pytest.mark.timeout(10)
def test_control_frame_exact_bytes() -> None:
    frame = control_frame("lagged", {"last_seq": 3, "msg": "behind"}, id=3)
    assert frame == b'id: 3\nevent: lagged\ndata: {"last_seq":3,"msg":"behind"}\n\n'
    assert control_frame("run", {"run_id": "r1"}) == b'event: run\ndata: {"run_id":"r1"}\n\n'
    assert control_frame("ready", None, id=0) == b"id: 0\nevent: ready\ndata: null\n\n"


@pytest.mark.timeout(10)
def test_closing_frame_carries_the_retry_hint_in_the_same_frame() -> None:
    frame = control_frame("closing", {"reason": "bye"}, id=7, retry=3000)
    assert frame == b'id: 7\nevent: closing\ndata: {"reason":"bye"}\nretry: 3000\n\n'
    assert parse_stream(frame) == [
        {"id": "7", "event": "closing", "data": {"reason": "bye"}, "retry": "3000"}
    ]


@pytest.mark.timeout(10)
def test_control_frame_is_multiline_safe_and_keeps_unicode() -> None:
    text = "line1\nline2\r\nline3\rend \n\ndata: forged\n\n \u2028 h\u00e9 \u2603 \U0001f600"
    frame = control_frame("done", {"text": text}, id=7)
    assert frame.count(b"\n\n") == 1
    assert frame.endswith(b"\n\n")
    assert b"\r" not in frame
    assert "h\u00e9 \u2603 \U0001f600".encode() in frame  # not \\u-escaped
    (event,) = parse_stream(frame)
    assert event == {"id": "7", "event": "done", "data": {"text": text}}


@pytest.mark.parametrize(
    "event", ["a\nb", "a\rb", "a\r\nb", "x\n\nevent: forged\ndata: {}\n\n", "x\rid: 99"]
)
@pytest.mark.timeout(10)
def test_an_event_type_cannot_forge_a_frame_or_a_field(event: str) -> None:
    frame = control_frame(event, {"ok": True}, id=1)
    assert frame.count(b"\n\n") == 1
    assert b"\r" not in frame
    (parsed,) = parse_stream(frame)
    assert parsed["id"] == "1"
    assert parsed["data"] == {"ok": True}
    assert "\n" not in parsed["event"]
    assert frame.count(b"\nid: ") + frame.startswith(b"id: ") == 1


@pytest.mark.timeout(10)
def test_odd_values_still_encode_as_json() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    odd = {
        "nan": math.nan,
        "inf": -math.inf,
        "obj": object(),
        "set": {1},
        "tuple_key": {(1, 2): "v"},
        "cycle": cyclic,
        "bytes": b"\x00",
    }
    (event,) = parse_stream(control_frame("done", {"result": odd}, id=9))
    decoded = event["data"]["result"]  # strict JSON: browsers reject NaN
    assert decoded["nan"] == {"__repr__": "nan"}
    assert decoded["inf"] == {"__repr__": "-inf"}
    assert decoded["obj"]["__repr__"].startswith("<object object")
    assert decoded["tuple_key"] == {"(1, 2)": "v"}
    assert decoded["cycle"] == [1, {"__repr__": "<cycle>"}]


# --------------------------------------------------------------------------
# Trace frames (the hot path, spliced from Event.data_json)


@pytest.mark.timeout(10)
def test_trace_frame_exact_bytes() -> None:
    event = Event(seq=3, ts=0.5, type="progress", data={"pct": 50, "msg": "half"})
    assert sse_event_frame(event) == (
        'id: 3\nevent: progress\ndata: {"seq":3,"ts":"1970-01-01T00:00:00.500Z",'
        '"type":"progress","data":{"pct":50,"msg":"half"}}\n\n'
    )
    assert sse_event_frame(event) == f"id: 3\nevent: progress\ndata: {event_json(event)}\n\n"


@pytest.mark.timeout(10)
def test_trace_frame_data_is_one_line_whatever_the_payload() -> None:
    text = "a\nb\r\nc\rd\n\nevent: forged\ndata: {}\n\n \u2028 h\u00e9 \U0001f600"
    event = Event(seq=7, ts=1.0, type="log", data={"text": text, "nan": math.nan})
    frame = sse_event_frame(event).encode()
    assert frame.count(b"\n\n") == 1
    assert b"\r" not in frame
    assert "h\u00e9 \U0001f600".encode() in frame
    (parsed,) = parse_stream(frame)
    assert parsed["id"] == "7"
    assert parsed["event"] == "log"
    assert parsed["data"]["data"] == {"text": text, "nan": {"__repr__": "nan"}}


@pytest.mark.timeout(10)
def test_heartbeat_is_a_comment_frame() -> None:
    assert heartbeat_event().encode() == HEARTBEAT
    assert parse_stream(HEARTBEAT + control_frame("x", 1, id=1)) == [
        {"id": "1", "event": "x", "data": 1}
    ]


@pytest.mark.timeout(10)
def test_event_source_response_passes_frames_through_with_headers() -> None:
    """Checks the claims of runyard.web.sse's docstring against sse-starlette itself."""
    events = [Event(seq=i, ts=float(i), type="step", data={"x": "y" * i}) for i in range(1, 31)]
    trace = "".join(map(sse_event_frame, events)).encode()
    first = control_frame("run", {"run_id": "r1", "status": "running"})
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> EventSourceResponse:
        async def body() -> AsyncIterator[bytes]:
            yield first
            yield trace

        return EventSourceResponse(body(), **response_kwargs(0))

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/stream")

    response = asyncio.run(fetch())
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == first + trace
    parsed = parse_stream(response.content)
    assert [p["event"] for p in parsed] == ["run"] + ["step"] * 30
    assert [p.get("id") for p in parsed[1:]] == [str(i) for i in range(1, 31)]


# --------------------------------------------------------------------------
# Resume cursor


@pytest.mark.parametrize(
    ("header", "after", "expected"),
    [
        (None, None, 0),
        ("5", None, 5),
        (None, "7", 7),
        ("12", "3", 12),  # the browser's reconnect header is newer than the URL
        ("", "3", 3),  # empty Last-Event-ID counts as absent
        ("  ", None, 0),
        (" 42 ", None, 42),
        ("0", None, 0),
        (str(MAX_CURSOR), None, MAX_CURSOR),
        ("007", None, 7),
        ("12", "x", 12),  # the header wins; a bad ?after= is never looked at
    ],
)
@pytest.mark.timeout(10)
def test_resume_cursor_valid(header: str | None, after: str | None, expected: int) -> None:
    assert parse_resume_cursor(header, after) == expected


@pytest.mark.parametrize(
    ("header", "after", "names"),
    [
        ("-1", None, "Last-Event-ID"),
        ("abc", None, "Last-Event-ID"),
        (None, "1.5", "after"),
        (None, "1e3", "after"),
        (None, "+3", "after"),
        (None, "1_000", "after"),
        (None, "0x10", "after"),
        ("\u0663", None, "Last-Event-ID"),  # Arabic-Indic 3: int() would accept it
        ("\u00b2", None, "Last-Event-ID"),  # superscript 2: isdigit() would accept it
        ("9" * 30, None, "too large"),
        (str(MAX_CURSOR + 1), None, "too large"),
        ("9" * 10_000, None, "too large"),
    ],
)
@pytest.mark.timeout(10)
def test_resume_cursor_malformed_is_400(header: str | None, after: str | None, names: str) -> None:
    with pytest.raises(InvalidCursor) as info:
        parse_resume_cursor(header, after)
    assert isinstance(info.value, InvalidRequest)
    assert info.value.http_status == 400
    assert names in info.value.message
    assert len(info.value.message) < 200  # a huge value is not echoed whole


# --------------------------------------------------------------------------
# Times


@pytest.mark.timeout(10)
def test_iso_utc() -> None:
    moment = datetime(2026, 11, 25, 14, 45, 28, 123000, tzinfo=UTC).timestamp()
    assert iso_utc(moment) == "2026-11-25T14:45:28.123Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"
    assert iso_utc(59.9996) == "1970-01-01T00:01:00.000Z"  # rounding carries
    assert iso_utc(moment + 0.0004) == "2026-11-25T14:45:28.123Z"
    assert iso_utc_or_none(None) is None
    assert iso_utc_or_none(1.5) == "1970-01-01T00:00:01.500Z"
