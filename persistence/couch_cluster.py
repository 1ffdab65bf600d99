"""``CouchCluster``: a node's cluster backend on a shared CouchDB database.

It answers the runtime's messages of :mod:`runyard.actors.cluster_protocol`: it
keeps this node's lease alive (:mod:`runyard.persistence.couch_leases`), reads
everyone's, claims expired ones, records stop requests, reads the header and
event pages of other nodes' runs (the very reads of ``CouchStore``,
:mod:`runyard.persistence.couch_reads`), and runs this node's changes follower
(:mod:`runyard.persistence.couch_changes`).

It is an :class:`~runyard.actors.asyncio_actor.AsyncioActor` on the server's event
loop: its work is waiting on CouchDB, which costs the loop nothing, and
each ask is a deferred reply, so a slow one holds up no other. It has its
own aiocouch session (opened at the first ask, again after a failed open),
not the persistence actor's: that one lives on the store thread's loop.

Every ask answers within ``timeout_s`` or fails with
:class:`~runyard.actors.errors.StoreUnavailable` naming the server, the database
and what failed. Stopping it (``ask_stop``) writes the lease ``stopped``
(best effort, within ``timeout_s``), ends the follower and the renewals,
and closes the session before the stop is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import aiohttp
import pykka
from aiocouch import CouchDB, Database

from runyard.actors.asyncio_actor import AsyncioActor
from runyard.actors.cluster_protocol import (
    ClaimNode,
    Follow,
    LeasesSeen,
    ListNodes,
    NodeLease,
    NodeStatus,
    ReadEvents,
    ReadHeader,
    ReadStopRequests,
    RequestStop,
)
from runyard.actors.errors import StoreUnavailable
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event
from runyard.persistence.couch_changes import ChangesFollower
from runyard.persistence.couch_cluster_docs import request_doc, request_id
from runyard.persistence.couch_layout import CouchStoreError
from runyard.persistence.couch_leases import OwnLease, claim_lease, read_leases
from runyard.persistence.couch_reads import read_event_page, read_header, read_run_doc
from runyard.persistence.couch_requests import docs_by_id, open_database, put_doc, update_seq
from runyard.persistence.loop_actor import describe

__all__ = ["CouchCluster"]

logger = logging.getLogger("runyard.cluster")

T = TypeVar("T")

_EXPECTED: Final = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    CouchStoreError,
    ValueError,
    KeyError,
)
"""What a request to CouchDB fails with (aiocouch's errors are among these)."""


class CouchCluster(AsyncioActor):
    """This node's cluster backend on database ``database`` at ``url``.

    ``lease_s``: the lease period (renewed, and all leases read, every
    ``lease_s / 3``); ``timeout_s``: the bound of every request and ask;
    ``wait_s``: how long one ``_changes`` longpoll waits for a change;
    ``retry_max_s``: the longest pause of the follower while CouchDB fails;
    ``range_page``: event chunks per range read of ``ReadEvents``.
    Raises ``ValueError`` for a URL that is not ``http(s)://`` or a period
    or bound that is not positive.
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        node_id: str,
        lease_s: float,
        timeout_s: float,
        loop: asyncio.AbstractEventLoop | None = None,
        wait_s: float = 25.0,
        retry_max_s: float = 2.0,
        range_page: int = 32,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the CouchDB URL must be http(s)://[user:password@]host[:port]")
        if min(lease_s, timeout_s, wait_s, retry_max_s) <= 0 or range_page < 1:
            raise ValueError("lease_s, timeout_s, wait_s, retry_max_s and range_page must be > 0")
        super().__init__(loop=loop)
        self._url = url.rstrip("/")
        self._where = f"CouchDB at {parts.scheme}://{parts.hostname}:{parts.port or 5984}"
        self._db_name = database
        self.node_id = node_id
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self._wait_s = wait_s
        self._retry_max_s = retry_max_s
        self._range_page = range_page
        self._couch: CouchDB | None = None
        self._db: Database | None = None
        self._opening: asyncio.Lock | None = None
        self._status = NodeStatus(live_runs=0, draining=False)
        self._lease: OwnLease | None = None
        self._to: pykka.ActorRef[Any] | None = None
        self._membership: pykka.ActorRef[Any] | None = None
        self._following = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._leaving = False
        self._closing: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # never show the credentials
        return f"CouchCluster({self._where}, db={self._db_name!r}, node={self.node_id!r})"

    # ------------------------------------------------------------ messages

    def on_receive(self, message: Any) -> Any:
        match message:
            case NodeStatus():
                self._status = message
                return None
            case Follow(to=to, membership=membership):
                return self._follow(to, membership)
            case ListNodes():
                return self._bounded("ListNodes", read_leases)
            case ClaimNode(lease=lease):
                return self._bounded("ClaimNode", lambda db: claim_lease(db, lease, self.node_id))
            case RequestStop():
                return self._bounded("RequestStop", lambda db: self._request_stop(db, message))
            case ReadStopRequests(run_ids=run_ids):
                return self._bounded("ReadStopRequests", lambda db: self._stops(db, run_ids))
            case ReadHeader(run_id=run_id):
                return self._bounded("ReadHeader", lambda db: self._read_header(db, run_id))
            case ReadEvents(run_id=run_id, after_seq=after_seq, limit=limit):
                return self._bounded(
                    "ReadEvents", lambda db: self._read_events(db, run_id, after_seq, limit)
                )
        return super().on_receive(message)

    # -------------------------------------------------------------- follow

    async def _follow(self, to: pykka.ActorRef[Any], membership: pykka.ActorRef[Any]) -> None:
        """Write the lease, take the follower's starting point, read the leases;
        then start the follower and the renewals (a repeated Follow only
        changes where messages go)."""
        self._to, self._membership = to, membership
        if self._following:
            return
        self._following = True
        try:
            since, leases = await self._bounded("Follow", self._start_point)
        except BaseException:
            self._following = False
            raise
        self._tell(membership, LeasesSeen(leases))
        assert self._db is not None
        follower = ChangesFollower(
            self._db,
            node_id=self.node_id,
            since=since,
            deliver=lambda message: self._tell(self._to, message),
            wait_s=self._wait_s,
            timeout_s=self.timeout_s,
            retry_max_s=self._retry_max_s,
        )
        self._spawn(follower.run(), "follower")
        self._spawn(self._renewals(), "renewals")

    async def _start_point(self, db: Database) -> tuple[str | int, tuple[NodeLease, ...]]:
        since = await update_seq(db)
        lease = self._lease or OwnLease(db, self.node_id, self.lease_s)
        await lease.write(self._status, renewing=False)
        self._lease = lease
        return since, await read_leases(db)

    async def _renewals(self) -> None:
        """Every ``lease_s / 3``: renew the lease, then read everyone's (never raises)."""
        lease, loop = self._lease, self.actor_loop
        assert lease is not None
        assert loop is not None
        period = self.lease_s / 3
        due = loop.time() + period
        failing: dict[str, str] = {}
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due + period, loop.time())
            await self._quietly(
                "renewing the lease", lambda: lease.write(self._status, renewing=True), failing
            )
            leases = await self._quietly("reading the leases", self._read_leases, failing)
            if leases is not None:
                self._tell(self._membership, LeasesSeen(leases))

    async def _read_leases(self) -> tuple[NodeLease, ...]:
        return await read_leases(await self._database())

    async def _quietly(
        self, what: str, work: Callable[[], Awaitable[T]], failing: dict[str, str]
    ) -> T | None:
        """``work()`` within ``timeout_s``; a failure is one warning per distinct error."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await work()
        except Exception as exc:
            error = describe(exc) if str(exc) else f"no answer within {self.timeout_s:g} s"
            if failing.get(what) != error:
                logger.warning("node %s: %s failed: %s", self.node_id, what, error)
            failing[what] = error
            return None
        if failing.pop(what, None) is not None:
            logger.info("node %s: %s works again", self.node_id, what)
        return result

    # ---------------------------------------------------------------- asks

    async def _request_stop(self, db: Database, msg: RequestStop) -> None:
        doc = request_doc(
            msg.run_id, node=msg.node, by=msg.by, reason=msg.reason, requested_at=time.time()
        )
        for _ in range(4):
            status, _rev = await put_doc(db, doc)
            if status != 409:
                return  # 201, or 202: stored on some copies, the rest follow
            stored = (await docs_by_id(db, [doc["_id"]])).get(doc["_id"])
            if stored is not None and stored.get("node") == msg.node:
                return  # asked before: recorded already
            # Recorded for a node that no longer runs it (taken over): name the owner now.
            doc = {**doc, "_rev": stored["_rev"]} if stored is not None else doc
        raise CouchStoreError(f"the stop request of run {msg.run_id} kept conflicting")

    async def _stops(self, db: Database, run_ids: tuple[str, ...]) -> frozenset[str]:
        found = await docs_by_id(db, [request_id(run_id) for run_id in run_ids])
        return frozenset(run_id for run_id in run_ids if request_id(run_id) in found)

    async def _read_header(self, db: Database, run_id: str) -> RunWrite | None:
        def read(ids: list[str]) -> Awaitable[dict[str, dict[str, Any]]]:
            return docs_by_id(db, ids)

        run_doc = await read_run_doc(read, run_id)
        return None if run_doc is None else await read_header(read, run_doc)

    async def _read_events(
        self, db: Database, run_id: str, after_seq: int, limit: int
    ) -> list[Event]:
        if limit < 1:
            return []
        run_doc = await read_run_doc(lambda ids: docs_by_id(db, ids), run_id)
        if run_doc is None:
            return []
        events, _ = await read_event_page(db, run_doc, after_seq, limit, page=self._range_page)
        return events

    async def _bounded(self, what: str, work: Callable[[Database], Awaitable[T]]) -> T:
        """``work`` on the open database within ``timeout_s``, its failures as
        :class:`StoreUnavailable`."""
        if self._leaving:
            raise StoreUnavailable(
                f"{what}: the cluster backend of node {self.node_id} is stopping"
            )
        try:
            async with asyncio.timeout(self.timeout_s):
                return await work(await self._database())
        except StoreUnavailable:
            raise
        except TimeoutError:
            raise StoreUnavailable(
                f"{self._where} (database {self._db_name!r}) did not answer {what} "
                f"within {self.timeout_s:g} s"
            ) from None
        except Exception as exc:
            if not isinstance(exc, _EXPECTED):
                logger.exception("%s failed unexpectedly", what)
            raise StoreUnavailable(
                f"{self._where} (database {self._db_name!r}) failed {what}: {describe(exc)}"
            ) from None

    async def _database(self) -> Database:
        if self._db is not None:
            return self._db
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._db is None:
                self._couch, self._db = await open_database(
                    self._url,
                    self._db_name,
                    timeout_s=self.timeout_s,
                    idle_timeout_s=self.timeout_s,
                )
        return self._db

    # ---------------------------------------------------------------- life

    def _tell(self, ref: pykka.ActorRef[Any] | None, message: Any) -> None:
        if ref is None:
            return
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            logger.debug(
                "node %s: %r is gone; %s dropped", self.node_id, ref, type(message).__name__
            )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        assert self.actor_loop is not None
        task = self.actor_loop.create_task(coro, name=f"{self!r} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_stopping(self) -> None:
        """Stop: end the tasks, write the lease ``stopped``, close the session."""
        self._leaving = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        lease = self._lease
        if lease is not None and self._db is not None:
            failing: dict[str, str] = {}
            await self._quietly(
                "leaving (lease stopped)", lambda: lease.leave(self._status), failing
            )
        couch, self._couch, self._db = self._couch, None, None
        if couch is not None:
            with contextlib.suppress(Exception):
                await couch.close()

    def on_stop(self) -> None:
        """Stopped without :meth:`on_stopping` (a failure, or the loop going away):
        release what can be."""
        for task in list(self._tasks):
            task.cancel()
        couch, self._couch, self._db = self._couch, None, None
        loop = self.actor_loop
        if couch is not None and loop is not None and loop.is_running():
            self._closing = loop.create_task(couch.close())
