"""What the registry and a run actor share about one live run: its gauges, its
settings, and the two messages between them.

``LiveRun`` is written by the run actor and read by the registry without a
message round trip (both live on the loop thread): this is how the registry
lists and introspects 100,000 live runs without asking 100,000 actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pykka

from runyard.actors.config import RuntimeConfig
from runyard.actors.errors import InvalidRequest
from runyard.actors.messages import LiveRunInfo, RestartPolicy, StartRun
from runyard.actors.output_schema import check_schema
from runyard.actors.records import JSON, Event, RunRecord, RunStatus, RunSummary

__all__ = ["LiveRun", "RunEnded", "RunSettings", "StartAck"]


@dataclass
class LiveRun:
    """A live run's gauges: written by its run actor, read by the registry."""

    run_id: str
    owner: str
    agent: str
    started_at: float
    workspace: str | None = None
    ref: pykka.ActorRef[Any] | None = None
    status: RunStatus = "running"
    trace_length: int = 0
    """Events a reader can see: with a store, those it acknowledged (the high-water mark)."""
    unstored_bytes: int = 0
    """Event data emitted but not yet acknowledged by the store (what backpressure bounds)."""
    subscribers: int = 0
    stopping: bool = False

    def info(self, now: float) -> LiveRunInfo:
        """What an operator sees of it (``Introspect``); ``now`` in POSIX seconds."""
        return LiveRunInfo(
            run_id=self.run_id,
            owner=self.owner,
            agent=self.agent,
            age_s=max(0.0, now - self.started_at),
            trace_length=self.trace_length,
            unstored_bytes=self.unstored_bytes,
            subscribers=self.subscribers,
            stopping=self.stopping,
        )

    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.run_id,
            owner=self.owner,
            agent=self.agent,
            status=self.status,
            started_at=self.started_at,
            finished_at=None,
            event_count=self.trace_length,
            error=None,
            workspace=self.workspace,
        )


@dataclass(frozen=True, slots=True)
class RunSettings:
    """One run's knobs: the runtime's configuration plus the start request's.
    No defaults here: the registry fills every field."""

    config: RuntimeConfig
    max_duration_s: float | None
    restart: RestartPolicy | None
    options: dict[str, JSON]
    """What the run's record shows of them (``options`` in the API): the limits,
    ``output_schema`` and a run-code run's ``code``, so that a resumed run has them."""

    @property
    def output_schema(self) -> dict[str, JSON] | None:
        """The JSON Schema the run's result is checked against, if it was given one."""
        schema = self.options.get("output_schema")
        return schema if isinstance(schema, dict) else None

    @classmethod
    def of(cls, msg: StartRun, config: RuntimeConfig) -> RunSettings:
        """The settings ``msg`` asks for; :class:`InvalidRequest` (400) for bad limits,
        :class:`~runyard.actors.output_schema.InvalidOutputSchema` (422) for a bad schema."""
        if msg.max_duration_s is not None and not msg.max_duration_s > 0:
            raise InvalidRequest("max_duration_s must be a positive number of seconds")
        restart = msg.restart
        if restart is not None and (restart.max_restarts < 0 or restart.backoff_s < 0):
            raise InvalidRequest("restart.max_restarts and restart.backoff_s must be >= 0")
        options: dict[str, JSON] = {}
        if msg.max_duration_s is not None:
            options["max_duration_s"] = msg.max_duration_s
        if restart is not None:
            options["restart"] = {
                "max_restarts": restart.max_restarts,
                "backoff_s": restart.backoff_s,
            }
        if msg.output_schema is not None:
            options["output_schema"] = check_schema(msg.output_schema)
        if msg.code is not None:
            options["code"] = msg.code  # shown to its readers only, as the whole record
        return cls(config, msg.max_duration_s, restart, options)

    @classmethod
    def stored(cls, record: RunRecord, config: RuntimeConfig) -> RunSettings:
        """The settings a run was started with, as its record's ``options`` keep them."""
        options = dict(record.options)
        duration = options.get("max_duration_s")
        policy = options.get("restart")
        restart = None
        if isinstance(policy, dict):
            restart = RestartPolicy(
                int(cast(int, policy.get("max_restarts", 0))),
                float(cast(float, policy.get("backoff_s", 0.1))),
            )
        max_duration_s = float(duration) if isinstance(duration, int | float) else None
        return cls(config, max_duration_s, restart, options)


@dataclass(frozen=True, slots=True)
class Resume:
    """A run started again on this node after its node died (restart policy):
    it goes on from the stored trace under the same run id, with a ``restart``
    event, as an in-node restart does."""

    events: tuple[Event, ...]
    """The committed trace it had: seqs go on after it."""
    attempt: int
    reason: str
    epoch: int
    """The epoch the takeover fenced the run at (:attr:`RunRecord.epoch
    <runyard.actors.records.RunRecord.epoch>`): every write of the resumed run carries it."""


@dataclass(frozen=True, slots=True)
class EpochSeen:
    """The registry to a run actor: the store holds this run at ``epoch``. If
    that is higher than the run's own, another node fenced it (took it over)
    and the run actor drops it, as when a write of it is refused."""

    epoch: int


@dataclass(frozen=True, slots=True)
class RunFenced:
    """A run actor's last word when its run was taken over by another node (this
    node was judged dead and the run fenced in the store): the registry drops
    it without a record of its own, since the store's record is the new owner's."""

    run_id: str


@dataclass(frozen=True, slots=True)
class RunEnded:
    """A run actor's last word to the registry: its final record, sent before it stops."""

    record: RunRecord
    trace_bytes: int | None = None
    """The trace's event data in bytes, as the run counted it while it emitted; spares
    the registry a pass over every event (a million of them: tens of ms on the loop)."""


@dataclass(frozen=True, slots=True)
class StartAck:
    """A start's answer, handed to the new run actor with the asker's reply future.

    The run actor gives ``answer`` (the :class:`~runyard.actors.messages.RunStarted`)
    once its header is stored, in the step the store's acknowledgement
    reaches it: no message and no trip around the loop in between.
    :class:`~runyard.actors.errors.StoreUnavailable` after the store timeout, and the
    run is stopped: a start the store cannot keep is refused, and must not go
    on unseen.
    """

    answer: Any
    reply: pykka.Future[Any] | None
