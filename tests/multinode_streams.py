"""Reading streams across nodes: a run's stream resumed over many connections, and feeds.

Through the balancer each connection can land on another node, so a
client that reconnects with ``Last-Event-ID`` must still see every seq
exactly once.  :func:`resumed_stream` is such a client; :class:`FeedReader`
holds one ``/runs/feed`` connection open and collects its changes.

Both read with a short read timeout: the test nodes send a heartbeat every
``RUNYARD_HEARTBEAT_S`` (2 s), so a quiet stream still gives the reader a
chance to check its deadline, and a stream that stops answering fails the
test instead of hanging it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field

import httpx
from httpx_sse import EventSource, ServerSentEvent, connect_sse

from tests.sse_frames import Frame, open_stream, to_frame

READ_TIMEOUT_S = 10.0
"""Longest silence a stream may keep (the heartbeat comes every 2 s)."""


def stream_timeout() -> httpx.Timeout:
    return httpx.Timeout(30.0, read=READ_TIMEOUT_S)


@dataclass
class Resumed:
    """What a reconnecting client saw: all frames in order, and who served each connection."""

    frames: list[Frame] = field(default_factory=list)
    served_by: list[str] = field(default_factory=list)
    run_frames: list[Frame] = field(default_factory=list)
    """The ``run`` frame each connection began with (its ``status`` then)."""

    @property
    def seqs(self) -> list[int]:
        """Every trace seq received, in order, over all connections (duplicates kept)."""
        return [f.seq for f in self.frames if f.id and f.event not in ("lagged", "closing")]


def resumed_stream(
    client: httpx.Client,
    run_id: str,
    *,
    served_by: Callable[[httpx.Response], str],
    per_connection: int,
    max_connections: int = 200,
    deadline_s: float = 30.0,
) -> Resumed:
    """Follow ``run_id`` to its ``done``, reconnecting after every ``per_connection`` trace frames.

    Each reconnection sends ``Last-Event-ID`` with the last seq received, as
    an ``EventSource`` does.  A connection that breaks (its node was killed)
    is retried the same way.  The ``run`` frame each connection starts with
    is left out of ``frames``.
    """
    seen = Resumed()
    last: int | None = None
    deadline = time.monotonic() + deadline_s
    for _ in range(max_connections):
        assert time.monotonic() < deadline, f"no done within {deadline_s} s: {seen.seqs[-5:]}"
        try:
            with open_stream(client, run_id, last_event_id=last) as es:
                assert es.response.status_code == 200, es.response.read()
                seen.served_by.append(served_by(es.response))
                count = 0
                for sse in es.iter_sse():
                    # Heartbeats come as empty messages: a chance to check the deadline.
                    assert time.monotonic() < deadline, (
                        f"no done in {deadline_s} s: {seen.seqs[-5:]}"
                    )
                    if not sse.data:
                        continue
                    frame = to_frame(sse)
                    if frame.event == "run":
                        seen.run_frames.append(frame)
                        continue
                    seen.frames.append(frame)
                    last = frame.seq if frame.id else last
                    if frame.event == "done":
                        return seen
                    count += 1
                    if count >= per_connection:
                        break
        except httpx.TransportError:
            continue  # the node went away mid-stream: reconnect, as a browser would
    raise AssertionError(f"no done after {max_connections} connections: {seen.seqs[-5:]}")


class FeedReader:
    """One open ``GET /runs/feed``, read by a thread; ``until()`` waits for changes.

    A feed's frames carry no ids, so its heartbeats give an SSE parser
    nothing to yield: a reader blocked on the next frame could not check a
    deadline.  The thread reads, the test waits on a queue with one.
    """

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.changes: list[tuple[str, str]] = []
        """``(event, run_id)`` of every change taken so far, in order."""
        self.response: httpx.Response | None = None
        self._stack = ExitStack()
        self._queue: queue.Queue[tuple[str, str] | BaseException] = queue.Queue()

    def open(self) -> FeedReader:
        self._stack.enter_context(self.client)
        source: AbstractContextManager[EventSource] = connect_sse(self.client, "GET", "/runs/feed")
        es = self._stack.enter_context(source)
        assert es.response.status_code == 200, es.response.read()
        self.response = es.response
        events = es.iter_sse()
        first = to_frame(next(events))
        assert first.event == "ready", first
        threading.Thread(target=self._read, args=(events,), daemon=True).start()
        return self

    def _read(self, events: Iterator[ServerSentEvent]) -> None:
        try:
            for sse in events:
                if sse.data and sse.event.startswith("run_"):
                    self._queue.put((sse.event, to_frame(sse).data["run_id"]))
            self._queue.put(EOFError("the feed ended"))
        except BaseException as exc:  # handed to the test, which says what it was
            self._queue.put(exc)

    def until(self, wanted: set[tuple[str, str]], timeout: float = 10.0) -> list[tuple[str, str]]:
        """Take changes until every ``(event, run_id)`` of ``wanted`` was seen; all taken."""
        deadline = time.monotonic() + timeout
        while not wanted <= set(self.changes):
            missing = sorted(wanted - set(self.changes))
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"feed never showed {missing}; saw {self.changes}") from None
            if isinstance(item, BaseException):
                raise AssertionError(f"feed broke before {missing}: {item!r}") from item
            self.changes.append(item)
        return self.changes

    def close(self) -> None:
        """Close the connection; the reader thread ends with it (at the latest by a heartbeat)."""
        self._stack.close()

    def __enter__(self) -> FeedReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
