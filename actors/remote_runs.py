"""``RemoteRuns``: what the registry knows of runs that live on other nodes.

With several nodes sharing a store, the registry's own table covers only
this node's runs.  The rest it learns from the node's changes follower
(:mod:`runyard.actors.cluster_protocol`); this class keeps that part of the
registry's state, so the registry only routes:

- the mirrors (:class:`~runyard.actors.mirror.MirrorActor`), one per remote run that
  a client of this node follows;
- which remote runs this node has announced on the lifecycle feed, and
  their owners, so each remote run is announced ``started`` once and
  ``finished`` once however many commits it makes, and a deletion (a
  tombstone names no owner) reaches the owner's watchers.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import pykka

from runyard.actors.cluster_protocol import RunDocChanged
from runyard.actors.mirror import MirrorActor
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import RunSummary

__all__ = ["RemoteRuns"]

MAX_REMEMBERED = 20_000
"""Bound on the remote runs remembered (least recently changed out first), so
a node that never sees some runs end cannot grow without limit."""


class RemoteRuns:
    def __init__(self, cluster: pykka.ActorRef[Any], registry: pykka.ActorRef[Any]) -> None:
        self._cluster = cluster
        self._registry = registry
        self._mirrors: dict[str, pykka.ActorRef[Any]] = {}
        self._seen: OrderedDict[str, RunSummary] = OrderedDict()
        """Remote runs this node has announced ``started``, with their last summary."""
        self._running: dict[str, None] = {}
        """Those of them not announced ``finished`` yet."""

    def mirror(self, run_id: str, loop: asyncio.AbstractEventLoop) -> pykka.ActorRef[Any]:
        """The run's mirror on this node, started if there is none."""
        ref = self._mirrors.get(run_id)
        if ref is None or not ref.is_alive():
            ref = MirrorActor.start(
                run_id=run_id, cluster=self._cluster, registry=self._registry, loop=loop
            )
            self._mirrors[run_id] = ref
        return ref

    def mirror_of(self, run_id: str) -> pykka.ActorRef[Any] | None:
        return self._mirrors.get(run_id)

    def mirror_ended(self, run_id: str, ref: pykka.ActorRef[Any]) -> None:
        if self._mirrors.get(run_id) is ref:
            del self._mirrors[run_id]

    def changed(self, write: RunWrite) -> list[str]:
        """Route a run doc change to its mirror; the lifecycle kinds to publish.

        A run first seen finished (it started and ended between two reads of
        the feed) is announced ``started`` and ``finished`` at once."""
        ref = self._mirrors.get(write.run_id)
        if ref is not None:
            ref.tell(RunDocChanged(write))
        run_id = write.run_id
        seen = run_id in self._seen
        self._seen[run_id] = write.summary()
        self._seen.move_to_end(run_id)
        if len(self._seen) > MAX_REMEMBERED:
            oldest, _ = self._seen.popitem(last=False)
            self._running.pop(oldest, None)
        kinds = [] if seen else ["started"]
        if write.header.finished:
            if not seen or self._running.pop(run_id, False) is None:
                kinds.append("finished")
        elif not seen:
            self._running[run_id] = None
        return kinds

    def deleted(self, run_id: str) -> RunSummary | None:
        """The run as last seen, if this node has seen it (to announce the deletion)."""
        self._running.pop(run_id, None)
        return self._seen.pop(run_id, None)

    @property
    def mirrors(self) -> int:
        return len(self._mirrors)
