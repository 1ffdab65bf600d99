"""Operations: what an agent spent its run on (model calls, tool calls, ...).

An agent reports each one with ``ctx.op(kind, name, **fields)``: an ``op``
event in the trace (``{"kind", "name", **fields}``), so it streams, resumes
and is stored like any other event.  The run's record adds ``ops_log``, a
summary per kind::

    {"llm": {"count": 3, "duration_s": 4.2, "tokens": 900, "cost": 0.013},
     "tool": {"count": 1, "duration_s": 0.2}}

``count`` always; ``duration_s``, ``tokens`` and ``cost`` are totals of the
ops of that kind that gave them, and absent when none did.  The summary is
folded event by event (:class:`OpsTally`), from the whole trace: a run
resumed after a restart is seeded with the events it had.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeGuard

from runyard.actors.records import JSON, Event

__all__ = ["MAX_KINDS", "OP_TYPE", "TOTALS", "OpsTally", "check_op", "shrunk_op"]

OP_TYPE = "op"
KIND = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
"""An op's kind: a key of ``ops_log``, short and plain (like an event type)."""
TOTALS = ("duration_s", "tokens", "cost")
"""The numeric fields summed per kind (seconds, tokens, cost in the caller's currency)."""
MAX_NAME_CHARS = 200
MAX_KINDS = 100
"""Kinds summed separately; ops of further kinds are summed under :data:`OTHER_KIND`."""
OTHER_KIND = "(other)"


def check_op(kind: object, name: object, fields: dict[str, Any]) -> dict[str, JSON]:
    """The ``op`` event's data for ``ctx.op(kind, name, **fields)``.

    ``ValueError`` with what to fix: ``kind`` must be a short identifier-like
    string (:data:`KIND`: letters, digits, ``_.:-``), ``name`` a
    non-empty string of at most 200 characters, ``fields`` may not be named
    ``kind`` or ``name``, and ``duration_s``/``tokens``/``cost`` must be
    finite numbers >= 0 when given.
    """
    if not isinstance(kind, str) or not KIND.fullmatch(kind):
        msg = f"op kind {kind!r} must match {KIND.pattern}"
        raise ValueError(msg)
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        msg = f"op name {name!r} must be a non-empty string of at most {MAX_NAME_CHARS} characters"
        raise ValueError(msg)
    for reserved in ("kind", "name"):
        if reserved in fields:
            msg = f"an op field may not be named {reserved!r}"
            raise ValueError(msg)
    for total in TOTALS:
        value = fields.get(total)
        if value is not None and not _amount(value):
            msg = f"op field {total!r} must be a finite number >= 0, got {value!r}"
            raise ValueError(msg)
    return {"kind": kind, "name": name, **fields}


def shrunk_op(data: dict[str, JSON], size: int) -> dict[str, JSON]:
    """An op's data that encodes to ``size`` bytes, more than an event may hold:
    its ``kind``, ``name`` and totals (so ``ops_log`` still counts it) and the
    usual marker (``truncated``, ``original_bytes``) instead of its other fields."""
    kept = {key: data[key] for key in ("kind", "name", *TOTALS) if key in data}
    return {**kept, "truncated": True, "original_bytes": size}


def _amount(value: object) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


class OpsTally:
    """The running ``ops_log`` of one run, folded from its ``op`` events.

    Tolerant of what it reads: a stored trace may hold ``op`` events from
    before the checks (or, in theory, of any shape); those without a string
    ``kind`` are skipped and non-numeric totals ignored.
    """

    __slots__ = ("_kinds",)

    def __init__(self, events: tuple[Event, ...] | list[Event] = ()) -> None:
        self._kinds: dict[str, dict[str, float]] = {}
        for event in events:
            self.add(event)

    def add(self, event: Event) -> None:
        if event.type != OP_TYPE:
            return
        data = event.data
        kind = data.get("kind")
        if not isinstance(kind, str):
            return
        if kind not in self._kinds and len(self._kinds) >= MAX_KINDS:
            kind = OTHER_KIND
        sums = self._kinds.setdefault(kind, {"count": 0})
        sums["count"] += 1
        for total in TOTALS:
            value = data.get(total)
            if _amount(value):
                sums[total] = sums.get(total, 0) + value

    def summary(self) -> dict[str, JSON]:
        """``{kind: {"count", "duration_s"?, "tokens"?, "cost"?}}``; empty without ops.

        Float sums are rounded to 9 decimals (the noise of adding many floats)."""
        out: dict[str, JSON] = {}
        for kind, sums in self._kinds.items():
            out[kind] = {
                key: (round(value, 9) if isinstance(value, float) else value)
                for key, value in sums.items()
            }
        return out
