"""Runs as JSON on the wire, from pre-encoded event data (no SSE here: :mod:`runyard.web.sse`).

A trace can hold 100,000 events.  Each event's data was encoded once when it
was emitted (``Event.data_json``), so a run's JSON (and the ``data`` of its
SSE frames) is assembled from those strings instead of re-encoding every
event for every reader.  The shapes match the response models in
:mod:`runyard.web.models`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from runyard.actors.jsonsafe import dumps_safe
from runyard.actors.records import Event, RunRecord, RunSummary
from runyard.web.timefmt import iso_utc, iso_utc_or_none


def event_json(event: Event) -> str:
    """``{"seq", "ts", "type", "data"}`` of one trace event, ``data`` spliced in as encoded."""
    return (
        f'{{"seq":{event.seq},"ts":"{iso_utc(event.ts)}","type":{json.dumps(event.type)},'
        f'"data":{event.data_json}}}'
    )


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """A run list row (``RunSummaryModel``): times as ISO-8601 UTC, ``duration_s`` in seconds."""
    finished = summary.finished_at
    return {
        "run_id": summary.run_id,
        "agent": summary.agent,
        "status": summary.status,
        "started_at": iso_utc(summary.started_at),
        "finished_at": iso_utc_or_none(finished),
        "duration_s": None if finished is None else round(finished - summary.started_at, 6),
        "event_count": summary.event_count,
        "error": summary.error,
        "workspace": summary.workspace,
    }


def record_json(record: RunRecord) -> bytes:
    """The whole run as JSON bytes, events spliced in from their pre-encoded form."""
    events = ",".join(map(event_json, record.events))
    return f"{record_head(record, len(record.events))}{events}]}}".encode()


def record_head(header: RunRecord, event_count: int) -> str:
    """A run's JSON up to its events: ``{..., "events":[`` (the events and ``]}`` follow).

    What :func:`record_json` starts with, for a body written in pages.
    """
    head = summary_dict(replace(header.summary(), event_count=event_count))
    head["owner"] = header.owner
    head["input_dict"] = header.input
    head["result"] = header.result
    head["options"] = header.options
    head["schema_warnings"] = header.schema_warnings
    head["ops_log"] = header.ops_log
    _, encoded = dumps_safe(head)  # a stored record may predate today's checks
    return f'{encoded[:-1]},"events":['
