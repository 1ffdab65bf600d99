"""Timestamps as clients read them: UTC ISO-8601 with milliseconds and ``Z``.

The runtime keeps POSIX seconds (floats); every JSON body and SSE frame
turns them into strings here, at the edge.  A naive time without ``Z`` is
read as local time by browsers (docs/design.md, "Lessons we apply"), so
there is exactly one formatter and it always says UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_last: tuple[int, str] = (-1, "")
"""The last second formatted; one tuple, swapped whole, so threads can share it."""


def iso_utc(ts: float) -> str:
    """``1795704328.123`` -> ``"2026-11-25T14:45:28.123Z"``.

    Rounds to the nearest millisecond in integer arithmetic, so ``.9996``
    carries into the next second instead of printing ``.1000`` or
    truncating to ``.999`` through float error.
    """
    global _last
    millis = round(ts * 1000)
    second, rest = divmod(millis, 1000)
    cached_second, prefix = _last
    if second != cached_second:
        # Formatting the date is most of the cost, and a burst of events
        # shares its second: format it once per second.
        prefix = f"{_EPOCH + timedelta(seconds=second):%Y-%m-%dT%H:%M:%S}"
        _last = (second, prefix)
    return f"{prefix}.{rest:03d}Z"


def iso_utc_or_none(ts: float | None) -> str | None:
    """:func:`iso_utc` for optional times (``finished_at`` of a live run)."""
    return None if ts is None else iso_utc(ts)
