"""Nodes of a scale-out cluster on one CouchDB database, for the cluster backend's tests.

``Nodes`` starts :class:`~runyard.persistence.couch_cluster.CouchCluster` backends
(one per node id) and CouchStores on one database, each node with an
:class:`Inbox` for what its follower tells the registry and one for what
the membership hears; on exit it stops them all and drops the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import pykka

from runyard.actors.asyncio_actor import AsyncioActor, ask, ask_stop
from runyard.actors.cluster_protocol import Follow, LeasesSeen, NodeLease
from runyard.actors.records import Event, RunRecord, RunStatus
from runyard.persistence.couch_cluster import CouchCluster
from runyard.persistence.couch_store import CouchStore
from tests.couch_store_fixtures import T0
from tests.couch_store_fixtures import record as store_record
from tests.waiting import wait_until_async

__all__ = ["Inbox", "Node", "Nodes", "events", "record"]

M = TypeVar("M")


class Inbox(AsyncioActor):
    """Keeps every message it is told, in order, in ``got``."""

    def __init__(self, got: list[Any]) -> None:
        super().__init__()
        self.got = got

    def on_receive(self, message: Any) -> Any:
        self.got.append(message)
        return None


@dataclass
class Node:
    node_id: str
    ref: pykka.ActorRef[Any]
    seen: list[Any] = field(default_factory=list)
    """What the follower told this node's registry (``Follow.to``)."""
    heard: list[Any] = field(default_factory=list)
    """What the membership heard (``LeasesSeen``)."""
    inboxes: list[pykka.ActorRef[Any]] = field(default_factory=list)

    async def ask(self, message: Any, timeout: float = 15.0) -> Any:
        return await ask(self.ref, message, timeout=timeout)

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.seen if isinstance(m, kind)]

    async def wait_for(self, kind: type[M], what: str, timeout: float = 15.0, **fields: Any) -> M:
        """The first ``kind`` message seen whose attributes equal ``fields``."""

        def found() -> M | None:
            for message in self.of(kind):
                if all(_get(message, name) == value for name, value in fields.items()):
                    return message
            return None

        return await wait_until_async(found, timeout, f"node {self.node_id}: {what}")

    async def wait_leases(
        self, what: str, check: Any, timeout: float = 15.0
    ) -> dict[str, NodeLease]:
        """The latest ``LeasesSeen`` (as node id -> lease), once ``check`` holds for it
        (a ``KeyError`` in ``check``, a node not seen yet, counts as not yet)."""

        def found() -> dict[str, NodeLease] | None:
            seen = [m for m in self.heard if isinstance(m, LeasesSeen)]
            if not seen:
                return None
            leases = {lease.node_id: lease for lease in seen[-1].leases}
            try:
                return leases if check(leases) else None
            except KeyError:
                return None

        return await wait_until_async(found, timeout, f"node {self.node_id}: {what}")


def _get(message: Any, path: str) -> Any:
    value = message
    for name in path.split("__"):
        value = getattr(value, name)
    return value


class Nodes:
    """``async with Nodes(url, db) as nodes``, then ``await nodes.start("a")``,
    ``await nodes.store()``."""

    def __init__(self, url: str, db: str, *, lease_s: float = 1.0, timeout_s: float = 5.0) -> None:
        self.url = url
        self.db = db
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self._nodes: list[Node] = []
        self._stores: list[CouchStore] = []

    async def __aenter__(self) -> Self:
        return self

    async def start(
        self, node_id: str, *, url: str | None = None, follow: bool = True, **kwargs: Any
    ) -> Node:
        """A node's backend (on ``url``, default the server's), following unless told not to."""
        options = {"lease_s": self.lease_s, "timeout_s": self.timeout_s, "wait_s": 5.0, **kwargs}
        ref = CouchCluster.start(url or self.url, self.db, node_id=node_id, **options)
        node = Node(node_id, ref)
        self._nodes.append(node)
        if follow:
            to, membership = Inbox.start(node.seen), Inbox.start(node.heard)
            node.inboxes += [to, membership]
            await node.ask(Follow(to=to, membership=membership))
        return node

    async def store(self, **kwargs: Any) -> CouchStore:
        store = CouchStore(self.url, db=self.db, **kwargs)
        await store.open()
        self._stores.append(store)
        return store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for node in self._nodes:
            for ref in [node.ref, *node.inboxes]:
                if ref.is_alive():
                    await ask_stop(ref, timeout=30)
        await asyncio.gather(*(store.close() for store in self._stores))
        async with httpx.AsyncClient(timeout=30) as http:
            await http.delete(f"{self.url}/{self.db}")


def record(
    run_id: str,
    node: str | None,
    status: RunStatus = "running",
    n: int = 0,
    *,
    result: Any = None,
    updated_at: float = T0 + 1,
) -> RunRecord:
    """A run of alice's on ``node`` with ``n`` events (the store tests' record, placed)."""
    return dataclasses.replace(
        store_record(run_id, status, events(n), updated_at=updated_at, result=result), node=node
    )


def events(n: int, start: int = 1, size: int = 200) -> tuple[Event, ...]:
    """Events ``start .. start+n-1``, each with ``size`` characters of data."""
    return tuple(
        Event(seq=i, ts=T0 + i / 100, type="log", data={"i": i, "t": "x" * size})
        for i in range(start, start + n)
    )
