"""``RemoteRuns``: what the registry knows of runs that live on other nodes.

With several nodes sharing a store, the registry's own table covers only
this node's runs.  The rest it learns from the node's changes follower
(:mod:`actors.cluster_protocol`); this class keeps that part of the
registry's state, so the registry only routes:

- the mirrors (:class:`~actors.mirror.MirrorActor`), one per remote run that
  a client of this node follows;
- which remote runs this node has announced on the lifecycle feed as
  running, so each remote run is announced ``started`` once and
  ``finished`` once, however many commits it makes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pykka

from actors.cluster_protocol import RunDocChanged
from actors.mirror import MirrorActor
from actors.persistence_protocol import RunWrite
from actors.records import RunStatus

__all__ = ["RemoteRuns"]

MAX_ANNOUNCED = 100_000
"""Bound on remembered remote running runs (a node that never sees their end,
e.g. one that joined late, must not grow without limit)."""


class RemoteRuns:
    def __init__(self, cluster: pykka.ActorRef[Any], registry: pykka.ActorRef[Any]) -> None:
        self._cluster = cluster
        self._registry = registry
        self._mirrors: dict[str, pykka.ActorRef[Any]] = {}
        self._announced: dict[str, RunStatus] = {}

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

    def changed(self, write: RunWrite) -> str | None:
        """Route a run doc change to its mirror; the lifecycle kind to publish, if any."""
        ref = self._mirrors.get(write.run_id)
        if ref is not None:
            ref.tell(RunDocChanged(write))
        status = write.header.status
        before = self._announced.get(write.run_id)
        if status == "running":
            if before is None and len(self._announced) < MAX_ANNOUNCED:
                self._announced[write.run_id] = status
                return "started"
            return None
        self._announced.pop(write.run_id, None)
        return "finished"

    def deleted(self, run_id: str) -> None:
        self._announced.pop(run_id, None)

    @property
    def mirrors(self) -> int:
        return len(self._mirrors)
