"""The runtime's public language: what you send the registry.

The web layer turns every HTTP request into one of these frozen dataclasses,
and an internal Python service drives runyard with exactly the same messages,
so there is one behaviour to test, not two.  The other two vocabularies have
modules of their own, by audience: what a subscription delivers
(:mod:`runyard.actors.stream_items`) and what the runtime says to the store
(:mod:`runyard.actors.persistence_protocol`).

How to send them: ``await ask(registry_ref, StartRun(...))`` on the runtime's
event loop, or ``registry_ref.ask(StartRun(...), timeout=5)`` from any other
thread (see ``docs/internals.md``).  Failures come back as the exceptions in
:mod:`runyard.actors.errors`.

Who answers what:

=====================  =========================  ==============================
message                answered by                reply
=====================  =========================  ==============================
``StartRun``           registry                   ``RunStarted``
``GetRun``             registry                   ``RunRecord``
``ReadRun``            registry                   ``RunRecord`` or ``StoredReplay``
``ListRuns``           registry                   ``RunPage``
``Subscribe``          registry (-> run actor)    ``Subscription``
``Unsubscribe``        registry (-> run actor)    ``None`` (tell)
``WatchRuns``          registry                   ``Feed`` of ``RunChange``
``Unwatch``            registry                   ``None`` (tell)
``StopRun``            registry (-> run actor)    ``StopAccepted``
``DeleteRun``          registry                   ``None``
``Evict``              registry                   ``int`` (records evicted)
``Introspect``         registry (admins only)     ``RegistrySnapshot``
``CheckHealth``        registry                   ``Health``
``Shutdown``           registry                   ``None`` once every run ended
=====================  =========================  ==============================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runyard.actors.persistence_protocol import StoreHealth
from runyard.actors.records import JSON, RunStatus, RunSummary

if TYPE_CHECKING:
    from runyard.actors.feed import Feed
    from runyard.actors.subscription import Subscription


# --------------------------------------------------------------------------
# Who is asking


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity every message that names a run carries.

    Ownership is checked by the registry against ``user_id`` and the
    workspaces (:mod:`runyard.actors.access`): ``workspaces`` are those the
    caller belongs to (it reads their runs), ``workspace_admin`` those of them
    it administers (it may also stop and delete their runs).  ``admin`` only
    unlocks introspection, never someone else's trace.
    """

    user_id: str
    admin: bool = False
    workspaces: frozenset[str] = frozenset()
    workspace_admin: frozenset[str] = frozenset()


SYSTEM = Caller(user_id="system", admin=True)
"""The runtime's own identity, for timers and shutdown; owns no runs."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Restart a crashed agent for transient failures (OTP's ``transient`` child).

    The default for a run is no policy at all: a crash ends the run
    (OTP's ``temporary`` child).  ``backoff_s`` doubles after each restart.
    """

    max_restarts: int = 0
    backoff_s: float = 0.1


# --------------------------------------------------------------------------
# Registry: runs


@dataclass(frozen=True, slots=True)
class StartRun:
    """Start ``agent`` from the catalog with ``input`` on behalf of ``caller``.

    ``max_duration_s`` ends the run as ``error`` ("timed out") past that wall
    time.  ``code``/``env`` are for the ``run-code`` agent: submitted code runs
    in a child process with only ``env`` as its environment; the code is kept
    in the run's ``options`` (its readers see it), ``env`` never is (it may
    hold secrets).  ``output_schema``: a JSON Schema the result is checked
    against when the run succeeds (:mod:`runyard.actors.output_schema`; an invalid
    one is refused, 422, before a run exists).  ``workspace``: share the run
    with that workspace's members (the caller must be one, else 403); None
    keeps it personal.
    """

    caller: Caller
    agent: str
    input: dict[str, JSON] = field(default_factory=dict)
    max_duration_s: float | None = None
    restart: RestartPolicy | None = None
    code: str | None = None
    env: dict[str, str] | None = None
    output_schema: dict[str, JSON] | None = None
    workspace: str | None = None


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    status: RunStatus
    started_at: float


@dataclass(frozen=True, slots=True)
class GetRun:
    """The run's whole record (events, result, error), live, cached or stored."""

    caller: Caller
    run_id: str


@dataclass(frozen=True, slots=True)
class ReadRun:
    """Like :class:`GetRun`, for a reader that can take a long trace in pages.

    Reply: the ``RunRecord`` when memory holds the run, else a
    :class:`~runyard.actors.stored_replay.StoredReplay` of the stored run from its
    first event (its ``header`` and ``end_seq`` say the rest), so a 100,000-
    event run is never loaded whole for one request.
    """

    caller: Caller
    run_id: str


@dataclass(frozen=True, slots=True)
class ListRuns:
    """The runs the caller may read, newest first: its own and its workspaces'.

    ``workspace`` keeps only the runs of that workspace (the caller must be a
    member, else 403).

    ``cursor`` is the opaque ``next_cursor`` of the previous page; the order
    is (``started_at``, ``run_id``) descending, which never changes for a run,
    so pages neither skip nor repeat while runs start and finish.
    """

    caller: Caller
    status: RunStatus | None = None
    agent: str | None = None
    limit: int = 50
    cursor: str | None = None
    workspace: str | None = None


@dataclass(frozen=True, slots=True)
class RunPage:
    runs: tuple[RunSummary, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Replay ``trace[after_seq:]`` and follow live, in one step.

    The run actor takes the replay slice and adds the subscriber in the same
    handler, so nothing is missed and nothing is duplicated in between.
    ``max_queue`` bounds the live queue; a subscriber that falls that far
    behind gets :class:`~runyard.actors.stream_items.Lagged` and is dropped.
    """

    caller: Caller
    run_id: str
    after_seq: int = 0
    max_queue: int = 10_000


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Leave a run's subscriber set; never stops the run."""

    run_id: str
    subscription: Subscription


@dataclass(frozen=True, slots=True)
class StopRun:
    """Ask a run to stop: cooperative first, cancelled/killed after the grace."""

    caller: Caller
    run_id: str
    reason: str = "stopped by user"


@dataclass(frozen=True, slots=True)
class StopAccepted:
    run_id: str
    status: str = "stopping"


@dataclass(frozen=True, slots=True)
class DeleteRun:
    """Forget a finished run, in memory and in the store."""

    caller: Caller
    run_id: str


@dataclass(frozen=True, slots=True)
class Evict:
    """Drop finished records older than the retention from memory.

    With ``run_id`` set, drop that one record now (if it is finished and the
    store has it).  The runtime sends ``Evict()`` periodically; tests send it
    after moving a fake clock.
    """

    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class Introspect:
    caller: Caller


@dataclass(frozen=True, slots=True)
class LiveRunInfo:
    run_id: str
    owner: str
    agent: str
    age_s: float
    trace_length: int
    unstored_bytes: int
    subscribers: int
    stopping: bool


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """What is alive right now: the operator's view."""

    runs_by_status: dict[str, int]
    live: tuple[LiveRunInfo, ...]
    cached_finished: int
    persistence_backlog: int
    accepting: bool


@dataclass(frozen=True, slots=True)
class CheckHealth:
    """Is the registry answering, and the store?  Reply: :class:`Health`."""


@dataclass(frozen=True, slots=True)
class Health:
    accepting: bool
    live_runs: int
    store: StoreHealth | None
    """None when the runtime has no store (memory only)."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Stop accepting runs, give live ones ``grace_s`` to finish, stop the rest.

    Stopped runs end with reason ``"server shutdown"``; open subscriptions get
    :class:`~runyard.actors.stream_items.Closing` so clients know to come back later.
    """

    grace_s: float
    reason: str = "server shutdown"


@dataclass(frozen=True, slots=True)
class WatchRuns:
    """Follow the lifecycle (started, stopping, finished, deleted) of the runs
    the caller may read: its own and its workspaces' (only ``workspace``'s
    when given; the caller must be a member, else 403).

    Reply: a :class:`~runyard.actors.feed.Feed` of :class:`~runyard.actors.stream_items.RunChange`.
    Changes are not numbered: a watcher that reconnects lists the runs again,
    then watches.
    """

    caller: Caller
    max_queue: int = 1_000
    workspace: str | None = None


@dataclass(frozen=True, slots=True)
class Unwatch:
    feed: Feed
