"""SSE frame encoding, batching, the resume cursor and UTC times (web.sse, web.timefmt)."""

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

from actors.errors import InvalidRequest
from web.sse import (
    HEARTBEAT,
    MAX_CURSOR,
    SSE_HEADERS,
    Frame,
    InvalidCursor,
    dumps_json,
    encode_batches,
    encode_frame,
    encode_frames,
    heartbeat_event,
    parse_resume_cursor,
)
from web.timefmt import iso_utc, iso_utc_or_none


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
# Frames


@pytest.mark.timeout(10)
def test_frame_exact_bytes() -> None:
    frame = encode_frame("progress", {"seq": 3, "pct": 50, "msg": "half"}, id=3)
    assert frame == b'id: 3\nevent: progress\ndata: {"seq":3,"pct":50,"msg":"half"}\n\n'
    assert encode_frame("run", {"run_id": "r1"}) == b'event: run\ndata: {"run_id":"r1"}\n\n'
    assert encode_frame("log", None, id=0) == b"id: 0\nevent: log\ndata: null\n\n"


@pytest.mark.timeout(10)
def test_frame_is_multiline_safe_and_keeps_unicode() -> None:
    text = "line1\nline2\r\nline3\rend \u2028 h\u00e9 \u2603 \U0001f600"
    frame = encode_frame("log", {"text": text}, id=7)
    assert frame.count(b"\n\n") == 1
    assert frame.endswith(b"\n\n")
    assert b"\r" not in frame
    assert "h\u00e9 \u2603 \U0001f600".encode() in frame  # not \\u-escaped
    (event,) = parse_stream(frame)
    assert event == {"id": "7", "event": "log", "data": {"text": text}}


@pytest.mark.parametrize("event", ["", "a\nb", "a\rb"])
@pytest.mark.timeout(10)
def test_frame_refuses_multiline_event_type(event: str) -> None:
    with pytest.raises(ValueError, match="event type"):
        encode_frame(event, {})


@pytest.mark.parametrize("bad_id", [-1, True, 1.5, "3"])
@pytest.mark.timeout(10)
def test_frame_refuses_bad_id(bad_id: Any) -> None:
    with pytest.raises(ValueError, match="SSE id"):
        encode_frame("x", {}, id=bad_id)


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
    decoded = json.loads(dumps_json(odd))  # strict JSON: browsers reject NaN
    assert decoded["nan"] == {"__repr__": "nan"}
    assert decoded["inf"] == {"__repr__": "-inf"}
    assert decoded["obj"]["__repr__"].startswith("<object object")
    assert decoded["tuple_key"] == {"(1, 2)": "v"}
    assert decoded["cycle"] == [1, {"__repr__": "<cycle>"}]
    (event,) = parse_stream(encode_frame("done", {"result": odd}, id=9))
    assert event["data"]["result"]["nan"] == {"__repr__": "nan"}


# --------------------------------------------------------------------------
# Batches


def sample_frames(n: int) -> list[Frame]:
    return [Frame("step", {"seq": i, "text": "x" * (i % 50)}, i) for i in range(1, n + 1)]


@pytest.mark.timeout(10)
def test_encode_frames_is_concatenation_in_order() -> None:
    frames = sample_frames(100)
    joined = encode_frames(frames)
    assert joined == b"".join(encode_frame(*f) for f in frames)
    assert [int(e["id"]) for e in parse_stream(joined)] == list(range(1, 101))
    assert encode_frames([]) == b""


@pytest.mark.timeout(10)
def test_encode_batches_groups_without_splitting_frames() -> None:
    frames = sample_frames(500)
    chunks = list(encode_batches(frames, max_chunk_bytes=1000))
    assert 5 < len(chunks) < 500  # batched, not one send per event
    assert b"".join(chunks) == encode_frames(frames)
    largest_frame = max(len(encode_frame(*f)) for f in frames)
    for chunk in chunks:
        assert chunk.startswith(b"id: ")
        assert chunk.endswith(b"\n\n")
        assert len(chunk) < 1000 + largest_frame
    assert list(encode_batches([], max_chunk_bytes=10)) == []
    with pytest.raises(ValueError, match="positive"):
        list(encode_batches(frames, max_chunk_bytes=0))


@pytest.mark.timeout(10)
def test_heartbeat_is_a_comment_frame() -> None:
    assert HEARTBEAT.startswith(b":")
    assert HEARTBEAT.endswith(b"\n\n")
    assert heartbeat_event().encode() == HEARTBEAT
    assert parse_stream(HEARTBEAT + encode_frame("x", 1, id=1)) == [
        {"id": "1", "event": "x", "data": 1}
    ]


@pytest.mark.timeout(10)
def test_event_source_response_passes_bytes_through_with_headers() -> None:
    """Checks the claims of web.sse's docstring against sse-starlette itself."""
    frames = sample_frames(30)
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> EventSourceResponse:
        async def body() -> AsyncIterator[bytes]:
            yield encode_frame("run", {"run_id": "r1", "status": "running"})
            for chunk in encode_batches(frames, max_chunk_bytes=500):
                yield chunk

        return EventSourceResponse(
            body(), headers=dict(SSE_HEADERS), ping=0, sep="\n", send_timeout=5
        )

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/stream")

    response = asyncio.run(fetch())
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["content-type"].startswith("text/event-stream")
    expected = encode_frame("run", {"run_id": "r1", "status": "running"}) + encode_frames(frames)
    assert response.content == expected


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
