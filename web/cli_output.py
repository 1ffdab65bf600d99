"""How ``runyard runs ...`` shows runs and events to people: aligned tables, short lines.

Scripts use ``--json`` instead (the server's own JSON); nothing here is
meant to be parsed.  Long values are cut with an ellipsis so a table stays
one line per run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from runyard.web.models import EventModel, RunDetail, RunSummaryModel

RUN_COLUMNS = ("RUN ID", "AGENT", "STATUS", "STARTED", "DURATION", "EVENTS", "ERROR")
EVENT_COLUMNS = ("SEQ", "TIME", "TYPE", "DATA")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns left-aligned, two spaces apart; the last column is not padded."""
    rows = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def compact(value: Any) -> str:
    """JSON on one line, as short as it goes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def run_row(run: RunSummaryModel) -> list[str]:
    return [
        run.run_id,
        run.agent,
        run.status,
        run.started_at,
        duration(run.duration_s),
        str(run.event_count),
        clip(run.error or "", 50),
    ]


def runs_table(runs: Iterable[RunSummaryModel]) -> str:
    return table(RUN_COLUMNS, (run_row(run) for run in runs))


def event_line(event: EventModel, width: int = 100) -> list[str]:
    """``[seq, time of day, type, data]``: the date is the run's, shown once elsewhere."""
    return [str(event.seq), event.ts[11:], event.type, clip(compact(event.data), width)]


def events_table(events: Iterable[EventModel]) -> str:
    return table(EVENT_COLUMNS, (event_line(event) for event in events))


def run_detail(run: RunDetail, shown_events: int | None) -> str:
    """The record as ``key  value`` lines, then the last ``shown_events`` events (None: all)."""
    fields = [
        ("run id", run.run_id),
        ("agent", run.agent),
        ("status", run.status),
        ("owner", run.owner),
        ("started", run.started_at),
        ("finished", run.finished_at or "-"),
        ("duration", duration(run.duration_s)),
        ("events", str(run.event_count)),
        ("error", run.error or "-"),
        ("input", clip(compact(run.input_dict), 200)),
        ("result", clip(compact(run.result), 200)),
    ]
    text = "\n".join(f"{key:<9} {value}" for key, value in fields)
    events = run.events if shown_events is None else run.events[-shown_events:]
    if not events:
        return text
    if len(events) < len(run.events):
        text += f"\n\nlast {len(events)} of {len(run.events)} events (--all shows every one):"
    return f"{text}\n\n{events_table(events)}"


def done_line(event: EventModel) -> str:
    """How a run ended, from its ``done`` event."""
    status = event.data.get("status", "?")
    error = event.data.get("error")
    return f"finished: {status}" + (f" ({error})" if error else "")


def watch_line(event: EventModel) -> str:
    """One live event; fixed widths, since later lines cannot realign earlier ones."""
    seq, time, type_, data = event_line(event)
    return f"{seq:>6}  {time}  {type_:<14}  {data}"
