"""What one run may hold: the size of an event, and its trace's events and bytes.

A run's trace lives in server memory while it runs and in the finished-run
cache after, so one run must not be able to hold hundreds of MiB.  The caps
apply to every agent alike (in-process, or run-code whose child could write
raw frames to its socket behind its ``ctx``): they are checked where every
event enters the runtime, :meth:`RunActor._emit <runyard.actors.run.RunActor>`.

* An event larger than ``max_event_bytes`` is kept, as a marker saying so
  with a preview of its start: visible, never silently dropped.
* Past ``max_run_events`` or ``max_run_bytes`` the run ends ``error`` with a
  message naming the quota; its trace keeps everything before.
"""

from __future__ import annotations

from typing import Any

from runyard.actors.context import StopRequested

__all__ = ["PREVIEW_CHARS", "QuotaExceeded", "encoded_size", "truncated"]

PREVIEW_CHARS = 1024


class QuotaExceeded(StopRequested):
    """Raised by ``ctx.emit`` once the run is past a quota; the run then ends ``error``.

    A ``StopRequested`` so that agent code full of ``except Exception``
    cannot swallow it and go on emitting.
    """


def encoded_size(text: str) -> int:
    """Bytes of ``text`` as UTF-8 (lone surrogates counted as the 3 bytes they are stored as)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def truncated(text: str, size: int) -> dict[str, Any]:
    """The marker that replaces an oversized payload whose JSON is ``text`` (``size`` bytes)."""
    return {"truncated": True, "original_bytes": size, "preview": text[:PREVIEW_CHARS]}
