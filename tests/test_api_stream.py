"""SSE streams against a real server: framing, headers, closing, exact resume."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from runyard.actors.agents import builtin_catalog
from runyard.actors.context import RunContext
from tests.api_helpers import assert_error, get_run, start, wait_finished
from tests.live_server import TOKENS, LiveServer, LiveServerFactory
from tests.sse_frames import Frame, done_of, frames, iter_frames, open_stream, trace_seqs
from tests.waiting import wait_until

pytestmark = pytest.mark.server


@contextmanager
def stalled_stream(live: LiveServer, run_id: str) -> Iterator[http.client.HTTPResponse]:
    """A stream on a socket with a small receive buffer, as a slow client's would be.

    Loopback buffers otherwise autotune to tens of megabytes (``tcp_rmem``),
    which would let a stalled reader absorb a whole run without ever lagging.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", live.port))
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=30)
    conn.sock = sock
    try:
        conn.request(
            "GET", f"/runs/{run_id}/stream", headers={"Authorization": f"Bearer {TOKENS['alice']}"}
        )
        yield conn.getresponse()
    finally:
        conn.close()


def read_frame(response: http.client.HTTPResponse) -> str:
    lines = []
    while (line := response.readline().decode()) not in ("\n", ""):
        lines.append(line)
    return "".join(lines)


def parse_frames(text: str) -> list[Frame]:
    parsed = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.split("\n") if ": " in line and line[0] != ":"
        )
        if "event" in fields:
            parsed.append(Frame(fields["event"], fields.get("id", ""), json.loads(fields["data"])))
    return parsed


GATES: dict[str, asyncio.Event] = {}
"""Bursts waiting to be released by a test (on the server's loop)."""


async def gated_burst(input_dict: dict[str, Any], ctx: RunContext) -> Any:
    """Waits until the test opens its gate, then emits ``n`` events as fast as it can.

    So the burst reaches a subscriber that is already following live (a run
    that finished before the stream opened would be a replay instead).
    """
    gate = GATES.setdefault(str(input_dict["gate"]), asyncio.Event())
    ctx.emit("waiting")
    await gate.wait()
    n, pad = int(input_dict["n"]), "x" * int(input_dict["size"])
    for i in range(1, n + 1):
        ctx.emit("chat", i=i, pad=pad)
        if i % 100 == 0:
            await ctx.ready()  # the store's pace: the burst arrives in several commits
    return {"sent": n}


def open_gate(live: LiveServer, name: str) -> None:
    def release() -> None:
        GATES.setdefault(name, asyncio.Event()).set()

    live.gateway.runtime.loop.call_soon_threadsafe(release)


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory) -> LiveServer:
    catalog = builtin_catalog()
    catalog.register("gated_burst", gated_burst)
    return live_server(app_kwargs={"catalog": catalog}, heartbeat_s=0.2)


@pytest.mark.timeout(20)
def test_first_frame_is_run_last_is_done_and_headers_stop_proxies(alice: httpx.Client) -> None:
    run_id = start(alice, "ticker", n=3, interval=0.01)
    with open_stream(alice, run_id) as es:
        assert es.response.status_code == 200
        assert es.response.headers["content-type"].startswith("text/event-stream")
        assert es.response.headers["cache-control"] == "no-cache"
        assert es.response.headers["x-accel-buffering"] == "no"
        fs = list(iter_frames(es))

    first = fs[0]
    assert first.event == "run"
    assert first.id == ""  # the run frame is not a trace event: no id to resume from
    assert first.data["run_id"] == run_id
    assert first.data["status"] == "running"
    assert [f.event for f in fs[1:]] == ["tick", "tick", "tick", "done"]
    assert trace_seqs(fs) == [1, 2, 3, 4]
    assert [f.data["data"]["i"] for f in fs[1:4]] == [1, 2, 3]
    for f in fs[1:]:
        assert f.data["seq"] == f.seq
        assert f.data["type"] == f.event
        assert f.data["ts"].endswith("Z")
    assert done_of(fs) == {"status": "success", "result": {"ticks": 3}, "error": None}


@pytest.mark.timeout(20)
def test_closing_the_stream_does_not_stop_the_run(live: LiveServer, alice: httpx.Client) -> None:
    n = 12
    run_id = start(alice, "ticker", n=n, interval=0.08)
    fs = frames(alice, run_id, limit=3)  # run + 2 ticks, then disconnect
    assert [f.event for f in fs] == ["run", "tick", "tick"]
    assert get_run(alice, run_id)["status"] == "running"

    with live.client("root") as root:
        # The server noticed the disconnect: the run lost its subscriber, not its life.
        def unsubscribed() -> bool:
            live_runs = root.get("/ops/registry").json()["live"]
            mine = [r for r in live_runs if r["run_id"] == run_id]
            return not mine or mine[0]["subscribers"] == 0

        wait_until(unsubscribed, 10, "the closed stream to leave the subscriber set")

    run = wait_finished(alice, run_id)
    assert run["status"] == "success", run
    assert run["error"] is None
    assert run["result"] == {"ticks": n}
    assert [e["type"] for e in run["events"]] == ["tick"] * n + ["done"]
    assert [e["seq"] for e in run["events"]] == list(range(1, n + 2))


def _resume_kwargs(how: str, seq: int) -> dict[str, int]:
    return {"last_event_id": seq} if how == "header" else {"after": seq}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnect_replays_then_goes_live_without_gap_or_duplicate(
    alice: httpx.Client, how: str
) -> None:
    n = 12
    run_id = start(alice, "ticker", n=n, interval=0.08)
    first = frames(alice, run_id, limit=4)  # run, seq 1..3
    assert trace_seqs(first) == [1, 2, 3]

    with open_stream(alice, run_id, **_resume_kwargs(how, 3)) as es:
        second = list(iter_frames(es))

    # Still running when we came back: part of this connection was replay, part live.
    assert second[0].event == "run"
    assert second[0].data["status"] == "running"
    assert second[0].data["after"] == 3
    seqs = trace_seqs(second)
    assert seqs == list(range(4, n + 2)), seqs
    assert done_of(second)["status"] == "success"
    assert trace_seqs(first) + seqs == list(range(1, n + 2))


@pytest.mark.timeout(40)
def test_resume_at_random_cut_points_of_a_fast_run(alice: httpx.Client) -> None:
    """A fast ticker (0.2 ms apart); we cut and resume at random points, mostly mid-run.

    The union of what every connection received is exactly 1..N, in order.
    (``chatty`` at full speed now finishes before a client reconnects, which
    would test replays only; the runtime's property test covers full speed.)
    """
    rng = random.Random(20240611)
    n = 10_000
    run_id = start(alice, "ticker", n=n, interval=0.0002)
    received: list[int] = []
    connections = 0
    live_reconnects = 0
    last = 0
    done: dict[str, object] | None = None
    while done is None:
        how = rng.choice(["header", "query"])
        cut = rng.randint(1, 2_000)
        kwargs = _resume_kwargs(how, last) if last else {}
        with open_stream(alice, run_id, **kwargs) as es:
            assert es.response.status_code == 200
            connections += 1
            got = 0
            for f in iter_frames(es):
                if f.event == "run":
                    assert f.data["after"] == last
                    live_reconnects += f.data["status"] == "running" and connections > 1
                    continue
                if f.event == "lagged":
                    assert f.seq == last, (f, last)  # resume from what we really have
                    break
                assert f.seq == last + 1, (f.seq, last, connections)
                received.append(f.seq)
                last = f.seq
                if f.event == "done":
                    done = f.data["data"]
                    break
                got += 1
                if got >= cut:
                    break
    assert received == list(range(1, n + 2))
    assert done == {"status": "success", "result": {"ticks": n}, "error": None}
    assert connections > 3
    assert live_reconnects >= 1, f"all {connections} reconnects came after the end: not live"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("how", ["header", "query"])
def test_cursor_past_the_end_waits_for_live_events(alice: httpx.Client, how: str) -> None:
    run_id = start(alice, "ticker", n=6, interval=0.2)
    assert get_run(alice, run_id)["event_count"] < 4
    with open_stream(alice, run_id, **_resume_kwargs(how, 4)) as es:
        fs = list(iter_frames(es))
    assert fs[0].event == "run"
    assert fs[0].data["after"] == 4
    assert trace_seqs(fs) == [5, 6, 7]
    assert [f.data["data"].get("i") for f in fs[1:3]] == [5, 6]
    assert done_of(fs)["status"] == "success"


@pytest.mark.timeout(20)
def test_a_cursor_past_where_a_live_run_ends_still_gets_its_done(alice: httpx.Client) -> None:
    run_id = start(alice, "ticker", n=3, interval=0.2)
    with open_stream(alice, run_id, **_resume_kwargs("header", 50)) as es:
        fs = list(iter_frames(es))
    assert fs[0].event == "run"
    assert fs[0].data["status"] == "running"
    assert fs[0].data["last_seq"] < 50
    # Nothing past the cursor ever comes, but the end does: the run's own `done`.
    assert [f.event for f in fs[1:]] == ["done"]
    assert fs[1].id == "4"
    assert done_of(fs)["status"] == "success"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"after": "abc"}, {}),
        ({"after": "-1"}, {}),
        ({"after": "1.5"}, {}),
        ({}, {"Last-Event-ID": "-1"}),
        ({}, {"Last-Event-ID": "abc"}),
        ({"after": "1"}, {"Last-Event-ID": "x"}),  # the header wins, and it is bad
    ],
)
def test_malformed_cursor_is_400(
    alice: httpx.Client, params: dict[str, str], headers: dict[str, str]
) -> None:
    run_id = start(alice, "echo", x=1)
    resp = alice.get(f"/runs/{run_id}/stream", params=params, headers=headers)
    message = assert_error(resp, 400, "invalid_cursor")
    assert ("Last-Event-ID" if headers else "after") in message
    assert wait_finished(alice, run_id)["status"] == "success"


@pytest.mark.timeout(20)
def test_finished_run_stream_replays_everything_then_done(alice: httpx.Client) -> None:
    run_id = start(alice, "failer", events=2, message="kaput")
    run = wait_finished(alice, run_id)
    assert run["status"] == "error"
    fs = frames(alice, run_id)
    assert fs[0].event == "run"
    assert fs[0].data["status"] == "error"
    assert [f.event for f in fs[1:]] == ["step", "step", "error", "done"]
    assert trace_seqs(fs) == [1, 2, 3, 4]
    assert done_of(fs) == {"status": "error", "result": None, "error": "RuntimeError: kaput"}
    assert fs[0].data["last_seq"] == 4
    # A cursor at or past the end is never met with silence: the `run` frame
    # names the last seq, and the run's own `done` comes again.
    for cursor in (4, 9):
        tail = frames(alice, run_id, after=cursor)
        assert [f.event for f in tail] == ["run", "done"]
        assert tail[0].data["last_seq"] == 4
        assert tail[1].id == "4"
        assert done_of(tail) == done_of(fs)


@pytest.mark.timeout(20)
def test_heartbeat_comments_keep_an_idle_stream_alive(live: LiveServer) -> None:
    with live.client("alice") as client:
        run_id = start(client, "sleeper", seconds=30)
        lines: list[str] = []
        with client.stream("GET", f"/runs/{run_id}/stream") as resp:
            for line in resp.iter_lines():
                lines.append(line)
                if lines.count(": heartbeat") >= 2:
                    break
        assert lines[0].startswith("event: run")
        assert client.post(f"/runs/{run_id}/stop").status_code == 202
        assert wait_finished(client, run_id)["status"] == "stopped"


@pytest.mark.timeout(40)
def test_a_client_that_stops_reading_is_cut_off_with_lagged_then_resumes_exactly(
    live: LiveServer, alice: httpx.Client
) -> None:
    """The subscriber queue is bounded: a stalled reader gets ``lagged`` with its seq.

    The bound is checked at each commit (one commit may release a whole burst):
    the 40 MB burst passes the 8 MiB backpressure bound, so it is stored in
    several commits, and at a later one the reader is still 10,000 behind."""
    n = 20_000  # 2 KB each: 40 MB, far more than a 32 KiB window plus the 10,000-event queue
    gate = f"g{random.random()}"
    run_id = start(alice, "gated_burst", gate=gate, n=n, size=2000)
    with stalled_stream(live, run_id) as response:
        assert response.status == 200
        assert read_frame(response).startswith("event: run")
        assert "event: waiting" in read_frame(response)  # following live now
        open_gate(live, gate)
        # Stop reading until the run is over; the server must not wait for us.
        assert wait_finished(alice, run_id, 30)["status"] == "success"
        first = parse_frames(response.read().decode())
    lagged = first[-1]
    assert lagged.event == "lagged", [f.event for f in first[-2:]]
    assert lagged.data["last_seq"] == lagged.seq
    assert "Last-Event-ID" in lagged.data["message"]
    got = trace_seqs(first)
    assert got == list(range(2, lagged.seq + 1))  # exactly what was delivered after `waiting`
    assert lagged.seq < n

    rest = frames(alice, run_id, last_event_id=lagged.seq)
    assert trace_seqs(rest) == list(range(lagged.seq + 1, n + 3))  # `waiting`, n chats, done
    assert done_of(rest) == {"status": "success", "result": {"sent": n}, "error": None}


def _sse_frames(es: Any) -> Iterator[ServerSentEvent]:
    """httpx-sse's events with ``retry`` kept, minus its empty pseudo-events (see iter_frames)."""
    return (sse for sse in es.iter_sse() if not (sse.data == "" and sse.event == "message"))


@pytest.mark.timeout(30)
def test_server_closing_ends_run_and_feed_streams_with_closing_and_a_retry_hint(
    live: LiveServer, alice: httpx.Client
) -> None:
    """What a shutdown sends a reader: ``closing``, its resume seq as id, ``retry:`` 3000 ms."""
    with connect_sse(alice, "GET", "/runs/feed") as feed_es:
        assert feed_es.response.headers["cache-control"] == "no-cache"
        feed = _sse_frames(feed_es)
        ready = next(feed)
        assert (ready.event, ready.id, json.loads(ready.data)) == (
            "ready",
            "",
            {"user_id": "alice"},
        )
        run_id = start(alice, "sleeper", seconds=30)
        change = next(c for c in feed if json.loads(c.data)["run_id"] == run_id)
        assert change.event == "run_started"
        assert json.loads(change.data)["status"] == "running"

        with open_stream(alice, run_id) as run_es:
            stream = _sse_frames(run_es)
            assert [next(stream).event, next(stream).event] == ["run", "sleeping"]
            live.gateway.runtime.loop.call_soon_threadsafe(live.gateway.close_streams, "testing")
            rest = list(stream)
        feed_rest = list(feed)

    (closing,) = rest
    assert (closing.event, closing.id, closing.retry) == ("closing", "1", 3000)
    data = json.loads(closing.data)
    assert (data["last_seq"], data["reason"]) == (1, "testing")
    assert "Last-Event-ID: 1" in data["message"]
    assert feed_rest, "the feed ended without a closing frame"
    last = feed_rest[-1]
    assert (last.event, last.id, last.retry) == ("closing", "", 3000)
    assert json.loads(last.data) == {"reason": "testing"}

    assert alice.post(f"/runs/{run_id}/stop").status_code == 202
    assert wait_finished(alice, run_id)["status"] == "stopped"
