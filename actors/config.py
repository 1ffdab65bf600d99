"""``RuntimeConfig``: every knob of the runtime, and the one place its defaults live.

The server builds it from its ``RUNYARD_*`` settings in one place
(``runyard.web.config.Settings.runtime_config``), and those settings take their
defaults from :data:`DEFAULTS`, so a default is written once.  An internal
service that embeds the runtime builds one directly.  Everything downstream
(the registry, each run's supervisor, the store link) reads from it rather
than keeping defaults of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULTS", "RuntimeConfig"]


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Times are seconds; a ``0`` interval switches that periodic job off."""

    node_id: str = "local"
    """This process's name among the nodes sharing a store: written on every run it
    starts, and at start-up it reconciles only its own interrupted runs."""
    lease_s: float = 15.0
    """Scale-out (nodes sharing a CouchDB): a node's lease is renewed every
    ``lease_s / 3``; a node whose lease no other node has seen renewed for
    ``lease_s`` is dead, and one survivor takes over its live runs."""
    retention_s: float = 3600.0
    """How long a finished run stays in memory (it is in the store after that)."""
    store_retention_s: float = 7 * 24 * 3600.0
    """How long the store keeps finished runs before the periodic purge deletes them."""
    stop_grace_s: float = 5.0
    """Cooperative stop before the agent is cancelled (or its child killed), and
    again before a child that ignores cancellation is abandoned."""
    shutdown_grace_s: float = 30.0
    """On shutdown, how long live runs get to finish before they are stopped."""
    max_live_runs_per_user: int = 100
    """Per-user cap on live runs; past it ``StartRun`` fails with ``TooManyLiveRuns``."""
    evict_interval_s: float = 30.0
    """How often the registry drops finished runs past ``retention_s`` from memory."""
    purge_interval_s: float = 3600.0
    """How often the store is purged of runs past ``store_retention_s``."""
    store_timeout_s: float = 5.0
    """How long a request that needs the store (a start's record, a stop's, a
    delete, a read of a stored run) waits for it before failing with
    ``StoreUnavailable``."""
    max_event_bytes: int = 256 * 1024
    """An event whose data encodes to more is kept as a marker with a preview."""
    max_run_events: int = 1_000_000
    """Past this many events a run ends ``error`` naming the quota."""
    max_run_bytes: int = 128 * 1024 * 1024
    """Past this much event data (encoded) a run ends ``error`` naming the quota."""
    max_unstored_bytes: int = 8 * 1024 * 1024
    """Backpressure: a run's events not yet stored may hold this much; past it the
    agent waits at its next ``await ctx.ready()`` / ``ctx.sleep()`` (a run-code
    child's frames are not read meanwhile), rather than memory growing."""
    cache_bytes: int = 256 * 1024 * 1024
    """The finished-run cache's bound (event data, encoded), least recently used out
    first, on top of ``retention_s``."""
    write_window_s: float = 0.005
    """How long the store link's waiting writes wait, at most, behind a commit not
    acknowledged yet (a slow or failing store) before they are sent anyway.
    Not a wait before each commit: the group commit has no timer.  With no
    commit in flight a write crosses to the store thread at once (after one
    loop turn, with that step's other writes); writes that arrive while a
    commit is in flight go as one batch when it is acknowledged (one hop and
    one transaction per batch; a run that ends meanwhile is written once, as
    its final record).  Events reach subscribers once their batch is stored,
    so the commit is most of the delivery latency.  The server takes each
    store's own (``commit_window_s``: 5 ms SQLite, 50 ms CouchDB)."""
    commit_gap_s: float = 0.0
    """The shortest time between the starts of two commits (seconds); 0: the
    next commit goes as soon as the last one landed.  A store where every
    commit costs the whole cluster (CouchDB: each is a ``_changes`` row that
    every node's follower reads, then reads the run doc and the new chunk)
    keeps its commit rate bounded: one per 50 ms per node, as with the fixed
    window it replaced, while an idle run still commits at once.  The server
    takes each store's own (``commit_gap_s``: 5 ms SQLite, 50 ms CouchDB)."""


DEFAULTS = RuntimeConfig()
"""The defaults, for settings layers that describe them (``runyard serve --help``)."""
