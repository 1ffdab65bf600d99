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


Version: TypeAlias = tuple[int, str | None, int, float]
"""How a write compares to another of the same run: (epoch, status, event count,
updated_at).  A status of None means "nothing stored"."""


def replaces(new: Version, stored: Version) -> bool:
    """Whether a write of version ``new`` may overwrite ``stored``.

    The one merge rule of every write path (the store link's waiting writes, the persistence
    actor's backlog, both stores), because writes of one run can arrive out of
    order: a retried batch can land after a newer write of the run, and a
    node that recovered a run may race a late write.

    - nothing stored: yes;
    - a different epoch: the higher one wins, whatever the statuses (the epoch
      is a fencing token: a node that took the run over raised it, so nothing
      the run's previous owner still sends can land; docs/design.md, "Fencing");
    - ``new`` is terminal: yes (a terminal status always wins, and of two
      terminal versions the later write);
    - the stored one is terminal: no (a stale write never resurrects a
      finished run);
    - both ``running``: yes unless it would shrink the trace, or carry as many
      events but be older.
    """
    new_epoch, new_status, new_count, new_updated = new
    stored_epoch, stored_status, stored_count, stored_updated = stored
    if stored_status is None:
        return True
    if new_epoch != stored_epoch:
        return new_epoch > stored_epoch
    if new_status in TERMINAL_STATUSES:
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
    workspace: str | None = None
    """The workspace the run is shared with (:mod:`runyard.actors.access`); None: personal."""


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
    epoch: int = 0
    """The run's ownership epoch, a fencing token: a node that takes the run
    over from a node judged dead raises it in the store first, so any write
    the previous owner still sends (it may only have paused) loses to the new
    owner's (:func:`replaces`).  Always 0 on a single node."""
    schema_warnings: list[dict[str, str]] | None = None
    """Where a ``success`` result does not match the start's ``output_schema``:
    ``[{"path": JSON Pointer, "message"}]`` (:mod:`runyard.actors.output_schema`); ``[]``
    when it matches; None when nothing was checked (no schema, or no success)."""
    ops_log: dict[str, JSON] = field(default_factory=dict)
    """The run's operations summed per kind (:mod:`runyard.actors.ops_log`), once it ended;
    ``{}`` while it runs and for a run without ops."""
    workspace: str | None = None
    """The workspace whose members may read it (and whose admins stop or delete
    it: :mod:`runyard.actors.access`); None for a personal run."""

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def version(self) -> Version:
        return (self.epoch, self.status, len(self.events), self.updated_at)

    def newest(self, other: RunRecord) -> RunRecord:
        """Of two versions of this run, the one that must end up stored (``other``
        is the later write)."""
        return other if replaces(other.version, self.version) else self

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
            workspace=self.workspace,
        )
