"""The frames between the server and a run-code child.

Transport: a ``socketpair`` whose child end is handed to the child as an
extra file descriptor (``pass_fds``), not the child's stdout.  Why:

- **stdout and stderr stay plain pipes.**  Output that bypasses
  ``sys.stdout`` (``os.write(1, ...)``, C extensions, subprocesses the agent
  starts, the interpreter's own fatal-error messages) can never corrupt a
  frame; the server relays it as ``stdout`` events and keeps the tail of
  stderr to explain a crash.
- **One channel, both directions.**  The job goes down and the events come
  up on the same socket, and so does the cooperative stop, which a thread in
  the child reads even while the agent's code spins on the CPU.  stdin stays
  ``/dev/null``.
- **EOF means the other side is gone.**  A child whose server died sees EOF
  and exits instead of lingering; a server whose child died sees EOF at once.

Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON, an
object whose ``"t"`` names the message:

========  =================  ==============================================
``t``     direction          fields
========  =================  ==============================================
ping      server -> child    (none): a pre-started child answers ``pong``
                             (:mod:`runyard.actors.code.pool`); only before the job
pong      child -> server    (none)
job       server -> child    code, input, run_id, user_id, attempt, limits,
                             max_event_bytes, max_result_bytes, sandbox,
                             workdir, env
stop      server -> child    (none): set ``ctx.stopping``
sandbox   child -> server    landlock: ``"abi N"`` or ``"unavailable: why"``;
                             sent once, before any event
event     child -> server    type, data
result    child -> server    value
error     child -> server    type, message, traceback
stopped   child -> server    (none): the agent raised ``StopRequested``
========  =================  ==============================================

Size: an event whose ``data`` encodes to more than ``max_event_bytes``
(default 256 KiB) is sent as ``{"truncated": true, "original_bytes": N,
"preview": "<the first KiB of its JSON>"}`` under its own type: visible, never
dropped.  The server refuses any frame larger than its hard limit (the
biggest legitimate frame plus an envelope), which only a child that writes
to the socket behind the ``ctx``'s back can produce.

This module is imported by the child, so it uses the standard library,
:mod:`runyard.actors.jsonsafe` and :mod:`runyard.actors.quotas` only.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

from runyard.actors.jsonsafe import dumps_safe
from runyard.actors.quotas import encoded_size, truncated

HEADER = struct.Struct("!I")
DEFAULT_MAX_EVENT_BYTES = 256 * 1024
DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024
ENVELOPE_BYTES = 64 * 1024
"""Room for a frame's own fields (type, ``t``, a traceback) on top of its payload."""


class ProtocolError(Exception):
    """The other side sent something that is not a frame of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame: length prefix and compact JSON (non-JSON leaves become ``__repr__`` markers)."""
    _, text = dumps_safe(message)
    body = text.encode("utf-8", "surrogatepass")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"a frame is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError("a frame is not an object with a string 't'")
    return message


def event_message(type: str, data: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """The ``event`` message for ``data``, truncated with a marker past ``max_bytes``."""
    safe, text = dumps_safe(data)
    size = encoded_size(text)
    if size > max_bytes:
        safe = truncated(text, size)
    return {"t": "event", "type": type, "data": safe}


def frame_limit(max_event_bytes: int, max_result_bytes: int) -> int:
    """The largest frame a well-behaved child sends, plus an envelope."""
    return max(max_event_bytes, max_result_bytes) + ENVELOPE_BYTES


async def read_message(reader: asyncio.StreamReader, max_bytes: int) -> dict[str, Any] | None:
    """The next message, or None at a clean end of stream (server side)."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("the stream ended inside a frame header") from None
        return None
    (length,) = HEADER.unpack(header)
    if length > max_bytes:
        raise ProtocolError(f"a frame of {length} bytes is larger than the limit of {max_bytes}")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the stream ended inside a frame") from None
    return decode(body)


def recv_message(sock: socket.socket, max_bytes: int) -> dict[str, Any] | None:
    """The next message from a blocking socket, or None at a clean end (child side)."""
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if length > max_bytes:
        raise ProtocolError(f"a frame of {length} bytes is larger than the limit of {max_bytes}")
    body = _recv_exactly(sock, length)
    if body is None:
        raise ProtocolError("the stream ended inside a frame")
    return decode(body)


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks: list[bytes] = []
    got = 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if got:
                raise ProtocolError("the stream ended inside a frame")
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
