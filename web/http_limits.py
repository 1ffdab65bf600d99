"""Limits uvicorn's default HTTP parser lacks: header size, and clients that trickle.

uvicorn with ``uvicorn[standard]`` parses HTTP/1.1 with httptools, which has
no limit on the size of a request's head: a 100 MiB header took 15 s of the
event loop to parse (``url += chunk`` and header values are joined chunk by
chunk) and every other client waited.  uvicorn has no timeout for a request
that arrives slowly either: a client that sends one header byte a second,
or a body that never finishes, keeps its connection (and a task) for good.
h11, uvicorn's other parser, has ``h11_max_incomplete_event_size`` but
answers 400, not 431, has no timeouts either, and is slower per request.

:class:`LimitedHttpToolsProtocol` is httptools' protocol with three
additions, each a few lines on uvicorn's own hooks:

- **head size**: once a request's head (request line + headers) passes
  :data:`MAX_HEAD_BYTES` without ending, the client gets ``431 Request
  Header Fields Too Large`` and the connection is closed;
- **head time**: a request's head must arrive within :data:`HEAD_TIMEOUT_S`
  of its first byte (of the connection, for the first request); otherwise
  ``408 Request Timeout`` and close;
- **body idle**: a body that stops arriving for :data:`BODY_IDLE_S` (while
  the server is reading it, not while the app holds reading back) is cut:
  the connection closes and the app sees a disconnect;
- **a reader that stopped**: when the transport's write buffer has stayed
  above its high-water mark for :data:`SEND_STALL_S` (the client reads
  nothing, a stream queues up), the transport is aborted, not closed:
  ``close()`` would wait for the buffer to drain, which never happens.
  The app sees a disconnect (an SSE stream ends quietly), the buffers are
  freed, and one line is logged.  :data:`SEND_STALL_S` is below the SSE
  ``send_timeout`` (:data:`runyard.web.sse.SEND_TIMEOUT_S`), whose expiry would
  instead end in a traceback and a ``close()`` that never completes.

A reverse proxy in front (``docs/operations.md``) adds the rest: TLS,
connection limits per client address, request rates.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES: Final = 64 * 1024
"""Largest request line + headers accepted (nginx's default buffers allow 4 x 8 KiB)."""

HEAD_TIMEOUT_S: Final = 10.0
"""Seconds a request's head may take to arrive in full (nginx: client_header_timeout 60 s)."""

BODY_IDLE_S: Final = 30.0
"""Seconds a request body may pause between two reads (nginx: client_body_timeout 60 s)."""

SEND_STALL_S: Final = 20.0
"""Seconds a response may stay blocked on a client that does not read before the abort."""

TCP_USER_TIMEOUT_MS: Final = int((SEND_STALL_S + 5) * 1000)
"""The kernel's own bound on unacknowledged or unsendable data (``TCP_USER_TIMEOUT``),
set on the listening socket (accepted sockets inherit it): a backstop for what
:data:`SEND_STALL_S` does not see (the h11 fallback, a peer that vanished)."""

logger = logging.getLogger("runyard.http")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the head size limit and the two timeouts above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None

    # -- the head ----------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._cancel(self._head_timer)
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timed_out)

    def on_message_begin(self) -> None:
        if not self._in_head:  # a keep-alive connection's next request: its own clock
            self._start_head()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel(self._head_timer)
        self._head_timer = None
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        was_in_head = self._in_head
        if was_in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and was_in_head and self._head_bytes > MAX_HEAD_BYTES:
            self._refuse(431, "Request Header Fields Too Large", f"over {MAX_HEAD_BYTES} bytes")
        elif not self._in_head and self.cycle is not None and self.cycle.more_body:
            self._arm_body_timer()  # a body is arriving: it must keep arriving

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, "Request Timeout", f"no complete request head in {HEAD_TIMEOUT_S} s")

    def _refuse(self, status: int, phrase: str, why: str) -> None:
        client = self._peer()
        logger.info("closing a connection from %s: %d %s (%s)", client, status, phrase, why)
        body = f"{phrase}: {why}\n".encode()
        self.transport.write(
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()  # stops reading at once; the answer is still sent
        self._cancel(self._head_timer)
        self._cancel(self._body_timer)

    # -- the body ----------------------------------------------------------

    def _arm_body_timer(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = self.loop.call_later(BODY_IDLE_S, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = None
        super().on_message_complete()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the app is not reading: not the client's fault
            self._arm_body_timer()
            return
        client = self._peer()
        logger.info("closing a connection from %s: its request body stalled", client)
        self.transport.abort()

    # -- a client that stopped reading ----------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(SEND_STALL_S, self._send_stalled)

    def resume_writing(self) -> None:
        self._cancel(self._stall_timer)
        self._stall_timer = None
        super().resume_writing()

    def _send_stalled(self) -> None:
        self._stall_timer = None
        if self.transport.is_closing() and self.transport.get_write_buffer_size() == 0:
            return
        client = self._peer()
        logger.warning(
            "aborting the connection to %s: it has read nothing for %.0f s (%d bytes waiting)",
            client,
            SEND_STALL_S,
            self.transport.get_write_buffer_size(),
        )
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._stall_timer):
            self._cancel(timer)
        if isinstance(exc, TimeoutError):  # TCP_USER_TIMEOUT: the kernel gave up on the peer
            client = self._peer()
            logger.warning("the connection to %s timed out in the kernel (%s)", client, exc)
        super().connection_lost(exc)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
