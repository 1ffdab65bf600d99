"""The data a run is made of: its events, its record and its summary.

These are plain frozen values so that they can cross threads and actors
without copying or locking: the run actor builds them, everybody else reads
them.  Times are POSIX seconds (float) inside the runtime; the web layer and
the stores turn them into UTC ISO-8601 with ``Z`` at their edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from runyard.actors.jsonsafe import dumps_safe

JSON: TypeAlias = Any
"""A value that ``json.dumps`` accepts (dict, list, str, int, float, bool, None)."""

RunStatus: TypeAlias = Literal["running", "success", "error", "stopped"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"success", "error", "stopped"})
ALL_STATUSES: frozenset[str] = frozenset({"running", *TERMINAL_STATUSES})


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a run's trace.

    ``seq`` is dense (1, 2, 3, ...) within a run, so a reader that got event
    ``n`` resumes exactly with ``after_seq=n``: no timestamps-as-ids, no
    string comparison (docs/design.md, "Lessons we apply").
    """

    seq: int
    ts: float
    type: str
    data: dict[str, JSON]
    data_json: str = ""
    """``data`` encoded once (compact JSON): fan-out and replay reuse it, never re-encode."""

    def __post_init__(self) -> None:
        if not self.data_json:
            data, encoded = dumps_safe(self.data)
            object.__setattr__(self, "data", data)
            object.__setattr__(self, "data_json", encoded)


Version: TypeAlias = tuple[str | None, int, float]
"""How a write compares to another of the same run: (status, event count, updated_at).
A status of None means "nothing stored"."""


def replaces(new: Version, stored: Version) -> bool:
    """Whether a write of version ``new`` may overwrite ``stored``.

    The one merge rule of every write path (the store link's waiting writes, the persistence
    actor's backlog, both stores), because writes of one run can arrive out of
    order: a retried batch can land after a newer write of the run, and a
    node that recovered a run may race a late write.

    - nothing stored: yes;
    - ``new`` is terminal: yes (a terminal status always wins, and of two
      terminal versions the later write);
    - the stored one is terminal: no (a stale write never resurrects a
      finished run);
    - both ``running``: yes unless it would shrink the trace, or carry as many
      events but be older.
    """
    new_status, new_count, new_updated = new
    stored_status, stored_count, stored_updated = stored
    if stored_status is None or new_status in TERMINAL_STATUSES:
        return True
    if stored_status in TERMINAL_STATUSES:
        return False
    return (new_count, new_updated) >= (stored_count, stored_updated)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run list shows: everything but the trace and the result."""

    run_id: str
    owner: str
    agent: str
    status: RunStatus
    started_at: float
    finished_at: float | None
    event_count: int
    error: str | None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The whole truth about one run, live or finished.

    A finished record holds the very events its subscribers saw (the trace is
    the stream; there is no second copy that could diverge).
    """

    run_id: str
    owner: str
    agent: str
    status: RunStatus
    input: dict[str, JSON]
    started_at: float
    finished_at: float | None = None
    events: tuple[Event, ...] = ()
    result: JSON = None
    error: str | None = None
    updated_at: float = 0.0
    options: dict[str, JSON] = field(default_factory=dict)
    node: str | None = None
    """The node that runs it (``RUNYARD_NODE_ID``): after a crash, the node that
    reconciles it.  None in records written before nodes existed."""

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def replaces(self, status: str | None, event_count: int = 0, updated_at: float = 0.0) -> bool:
        """Whether this record may overwrite a version stored (or queued) as
        ``status`` with ``event_count`` events, last written at ``updated_at``;
        see :func:`replaces`."""
        return replaces(
            (self.status, len(self.events), self.updated_at), (status, event_count, updated_at)
        )

    def newest(self, other: RunRecord) -> RunRecord:
        """Of two versions of this run, the one that must end up stored (``other``
        is the later write)."""
        return other if other.replaces(self.status, len(self.events), self.updated_at) else self

    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.run_id,
            owner=self.owner,
            agent=self.agent,
            status=self.status,
            started_at=self.started_at,
            finished_at=self.finished_at,
            event_count=len(self.events),
            error=self.error,
        )
