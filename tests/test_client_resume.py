"""runyard.web.client's stream decisions frame by frame, and its error mapping (no server needed).

The live suites (tests/test_client_stream.py) drop real connections; here
the frames a connection cannot be made to send on cue are fed in directly:
``lagged``, ``closing``, a repeated ``done``.
"""

from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import ServerSentEvent

from runyard.web.client import (
    ApiError,
    ConnectionFailed,
    RetryPolicy,
    RunNotFound,
    ServerError,
    ShuttingDown,
)
from runyard.web.client.errors import error_from_response
from runyard.web.client.resume import Backoff, Reconnect, StreamCursor
from runyard.web.models import EventModel


def event(seq: int, type_: str = "tick") -> ServerSentEvent:
    data = {"seq": seq, "ts": "2026-11-25T15:13:09.478Z", "type": type_, "data": {}}
    return ServerSentEvent(event=type_, data=json.dumps(data), id=str(seq))


def done(seq: int) -> ServerSentEvent:
    return event(seq, "done")


RUN = ServerSentEvent(event="run", data='{"run_id":"r","status":"running","after":0,"last_seq":0}')


@pytest.mark.timeout(5)
def test_events_pass_once_and_the_cursor_moves() -> None:
    cursor = StreamCursor(None)
    assert cursor.headers() == {}
    assert cursor.accept(RUN) is None
    assert cursor.accept(ServerSentEvent(data="")) is None  # httpx-sse after a heartbeat
    first = cursor.accept(event(1))
    assert isinstance(first, EventModel)
    assert first.seq == 1
    assert cursor.headers() == {"Last-Event-ID": "1"}
    assert cursor.accept(event(1)) is None  # a replayed duplicate is dropped
    assert isinstance(cursor.accept(event(2)), EventModel)
    assert cursor.headers() == {"Last-Event-ID": "2"}


@pytest.mark.timeout(5)
def test_lagged_and_closing_mean_reconnect_with_the_servers_pace() -> None:
    cursor = StreamCursor(4)
    assert cursor.headers() == {"Last-Event-ID": "4"}
    lagged = ServerSentEvent(event="lagged", data='{"last_seq":4}', id="4")
    assert cursor.accept(lagged) == Reconnect("lagged", 0.0)
    closing = ServerSentEvent(event="closing", data='{"last_seq":4}', id="4", retry=3000)
    assert cursor.accept(closing) == Reconnect("closing", 3.0)
    assert cursor.headers() == {"Last-Event-ID": "4"}  # notices never move the cursor


@pytest.mark.timeout(5)
def test_done_is_delivered_once_even_at_or_below_the_cursor() -> None:
    cursor = StreamCursor(9)  # resumed past the end of a 4-event run
    end = cursor.accept(done(4))
    assert isinstance(end, EventModel)
    assert end.type == "done"
    assert cursor.accept(done(4)) is None
    with pytest.raises(ValueError, match="after must be"):
        StreamCursor(-1)


@pytest.mark.timeout(5)
def test_backoff_doubles_obeys_hints_and_gives_up_without_progress() -> None:
    backoff = Backoff(RetryPolicy(first_delay_s=0.1, max_delay_s=0.3, give_up_after_s=60), "u")
    assert [backoff.next_delay() for _ in range(4)] == [0.1, 0.2, 0.3, 0.3]
    backoff.progress()
    assert backoff.next_delay() == 0.1
    backoff.server_asked(Reconnect("closing", 3.0))
    assert backoff.next_delay() == 0.3  # the hint, capped by max_delay_s
    assert backoff.next_delay() == 0.2
    hopeless = Backoff(RetryPolicy(give_up_after_s=-1), "http://gone:1")
    hopeless.failed("connection refused")
    with pytest.raises(ConnectionFailed, match=r"http://gone:1 .*connection refused"):
        hopeless.next_delay()


def response(status: int, body: str | bytes) -> httpx.Response:
    return httpx.Response(status, content=body, request=httpx.Request("GET", "http://x/runs"))


@pytest.mark.timeout(5)
def test_errors_are_chosen_by_code_then_status() -> None:
    body = '{"error":{"code":"run_not_found","message":"no run abc"}}'
    err = error_from_response(response(404, body))
    assert isinstance(err, RunNotFound)
    assert (err.status, err.code, err.message, str(err)) == (
        404,
        "run_not_found",
        "no run abc",
        "no run abc",
    )
    draining = error_from_response(
        response(503, '{"error":{"code":"shutting_down","message":"m"}}')
    )
    assert isinstance(draining, ShuttingDown)
    assert draining.retryable
    teapot = error_from_response(response(418, '{"error":{"code":"teapot","message":"short"}}'))
    assert type(teapot) is ApiError
    assert teapot.code == "teapot"
    proxy = error_from_response(response(502, "<html>Bad Gateway</html>"))
    assert isinstance(proxy, ServerError)
    assert proxy.code == "http_502"
    assert "Bad Gateway" in proxy.message
