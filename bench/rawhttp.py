"""A small, fast HTTP/1.1 client on asyncio protocols with httptools' C parser.

The benchmarks drive both servers with this one client, so whatever it
costs is the same for both.  httpx is fine for a few requests but is itself
the bottleneck at thousands of requests or hundreds of thousands of SSE
frames per second, and 1,000 concurrent httpx streams are heavier than the
server under test.

* :class:`Connection`: one keep-alive connection, one request at a time.
* :class:`SSEStream`: one ``GET .../stream`` connection whose body is split
  into SSE frames as it arrives.  ``mode="ids"`` only pulls the ``id:`` lines
  out with a regex (C speed, for throughput); ``mode="frames"`` keeps every
  frame as ``(id, event, data)`` (for exactness checks).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httptools

_ID_LINE = re.compile(rb"^id: (\d+)$", re.M)


class HttpError(RuntimeError):
    pass


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[bytes, bytes]

    def json(self) -> Any:
        return json.loads(self.body)


class _ResponseProtocol(asyncio.Protocol):
    """Feeds bytes to httptools; completes one future per response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._body: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._done: asyncio.Future[Response] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"bad HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._fail(HttpError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if self._done is not None and not self._done.done():
            self._done.set_result(Response(status, b"".join(self._body), self._headers))

    def start(self) -> asyncio.Future[Response]:
        self._parser = httptools.HttpResponseParser(self)
        self._body = []
        self._headers = {}
        self._done = asyncio.get_running_loop().create_future()
        return self._done


def _request_bytes(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class Connection:
    """One keep-alive HTTP/1.1 connection; ``request`` calls must not overlap."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.headers = dict(headers or {})
        self._proto: _ResponseProtocol | None = None

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(_ResponseProtocol, self.host, self.port)
        self._proto = proto
        return self

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        if self._proto is None or self._proto.transport is None or self._proto.closed.done():
            await self.connect()
        proto = self._proto
        assert proto is not None
        assert proto.transport is not None
        hdrs = dict(self.headers)
        body = None
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        if headers:
            hdrs.update(headers)
        done = proto.start()
        proto.transport.write(_request_bytes(method, path, self.host, hdrs, body))
        return await done

    async def close(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
            await self._proto.closed
        self._proto = None

    async def __aenter__(self) -> Connection:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --------------------------------------------------------------------------
# SSE


Frame = tuple[int | None, str, bytes]
"""``(id, event, data)`` of one SSE frame (``id`` ``None`` when the frame has none)."""


def parse_frame(raw: bytes) -> Frame | None:
    """One frame's lines; ``None`` for a comment-only frame (heartbeat)."""
    id_: int | None = None
    event = "message"
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if not line or line[:1] == b":":
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"id":
            id_ = int(value) if value else None
        elif name == b"event":
            event = value.decode()
        elif name == b"data":
            data.append(value)
    if id_ is None and not data and event == "message":
        return None
    return id_, event, b"\n".join(data)


@dataclass
class StreamResult:
    """What one SSE connection received."""

    status: int = 0
    ids: list[int] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    first_frame: Frame | None = None
    done: bool = False
    lagged: bool = False
    t_open: float = 0.0
    t_first_event: float | None = None
    t_done: float | None = None
    error: str | None = None


class _SSEProtocol(_ResponseProtocol):
    def __init__(
        self,
        mode: str,
        stop_after: int | None,
        on_frame: Callable[[Frame], bool] | None,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.stop_after = stop_after
        self.on_frame = on_frame
        self.result = StreamResult(t_open=time.perf_counter())
        self.headers_seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.finished: asyncio.Future[StreamResult] = asyncio.get_running_loop().create_future()
        self._buf = b""
        self._stopped = False

    def _fail(self, exc: Exception) -> None:
        pass  # an SSE connection reports through ``finished``

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        self.result.status = status
        if not self.headers_seen.done():
            self.headers_seen.set_result(status)

    def on_body(self, body: bytes) -> None:
        if self._stopped:
            return
        if self.result.status != 200:
            self._body.append(body)
            return
        buf = self._buf + body
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return
        complete, self._buf = buf[: end + 2], buf[end + 2 :]
        if self.mode == "ids":
            self._take_ids(complete)
        else:
            self._take_frames(complete)

    def _take_ids(self, chunk: bytes) -> None:
        r = self.result
        if r.first_frame is None:
            head, _, _ = chunk.partition(b"\n\n")
            r.first_frame = parse_frame(head)
        found = _ID_LINE.findall(chunk)
        if found:
            if r.t_first_event is None:
                r.t_first_event = time.perf_counter()
            r.ids.extend(map(int, found))
        if b"\nevent: done\n" in chunk:
            r.done = True
            self._finish()
        elif b"event: lagged\n" in chunk:
            r.lagged = True

    def _take_frames(self, chunk: bytes) -> None:
        r = self.result
        for raw in chunk.split(b"\n\n"):
            if not raw:
                continue
            frame = parse_frame(raw)
            if frame is None:
                continue
            if r.first_frame is None:
                r.first_frame = frame
                continue
            if frame[0] is not None:
                if r.t_first_event is None:
                    r.t_first_event = time.perf_counter()
                r.ids.append(frame[0])
            r.frames.append(frame)
            if frame[1] == "lagged":
                r.lagged = True
            if frame[1] == "done":
                r.done = True
                self._finish()
                return
            if self.on_frame is not None and self.on_frame(frame):
                self._finish()  # the caller has what it wanted: hang up here
                return
            if self.stop_after is not None and frame[0] is not None and frame[0] >= self.stop_after:
                self._finish()
                return

    def _finish(self) -> None:
        self._stopped = True
        self.result.t_done = time.perf_counter()
        if not self.finished.done():
            self.finished.set_result(self.result)
        if self.transport is not None:
            self.transport.close()

    def on_message_complete(self) -> None:
        if self.result.status != 200:
            self.result.error = b"".join(self._body).decode(errors="replace")[:300]
        if not self.finished.done():
            self.result.t_done = time.perf_counter()
            self.finished.set_result(self.result)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.headers_seen.done():
            self.headers_seen.set_exception(HttpError("connection closed before headers"))
        if not self.finished.done():
            self.result.error = "connection closed before done"
            self.result.t_done = time.perf_counter()
            self.finished.set_result(self.result)


class SSEStream:
    """An open SSE connection; ``await stream.finished`` for its :class:`StreamResult`."""

    def __init__(self, proto: _SSEProtocol) -> None:
        self._proto = proto

    @property
    def result(self) -> StreamResult:
        return self._proto.result

    @property
    def finished(self) -> asyncio.Future[StreamResult]:
        return self._proto.finished

    async def wait_headers(self) -> int:
        return await self._proto.headers_seen

    def close(self) -> None:
        if self._proto.transport is not None:
            self._proto.transport.close()
        if not self._proto.finished.done():
            self._proto.result.t_done = time.perf_counter()
            self._proto.finished.set_result(self._proto.result)


async def open_stream(
    host: str,
    port: int,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    mode: str = "ids",
    stop_after: int | None = None,
    on_frame: Callable[[Frame], bool] | None = None,
) -> SSEStream:
    """Connect and send the GET; frames are parsed as they arrive.

    ``stop_after``: hang up once the frame with this id is read (``frames`` mode).
    ``on_frame``: called per frame (``frames`` mode); returning True hangs up.
    """
    if mode not in ("ids", "frames"):
        raise ValueError("mode must be 'ids' or 'frames'")
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(
        lambda: _SSEProtocol(mode, stop_after, on_frame), host, port
    )
    proto.start()
    hdrs = {"Accept": "text/event-stream", **(headers or {})}
    assert proto.transport is not None
    proto.transport.write(_request_bytes("GET", path, host, hdrs, None))
    return SSEStream(proto)


def check_contiguous(ids: Iterable[int], start: int) -> tuple[int, int]:
    """``(lost, duplicated)`` of ids that should be ``start+1, start+2, ...`` in order."""
    lost = dup = 0
    expected = start + 1
    for i in ids:
        if i == expected:
            expected += 1
        elif i < expected:
            dup += 1
        else:
            lost += i - expected
            expected = i + 1
    return lost, dup
