"""The mirror of a remote run (``MirrorActor``) over a real cluster backend and CouchDB.

A CouchStore writes a run as its owner would (commits of events, then the
final header); node ``b``'s ``CouchCluster`` answers the mirror's reads,
through a :class:`~tests.tcp_proxy.TcpProxy` that counts what CouchDB sent.
The test plays the registry: it tells the mirror the run doc changes a
follower would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pykka
import pytest

from runyard.actors.asyncio_actor import ask, ask_stop
from runyard.actors.cluster_protocol import ReadHeader, RunDocChanged
from runyard.actors.messages import Caller, Subscribe
from runyard.actors.mirror import MirrorActor
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event
from runyard.actors.stored_replay import PAGE_EVENTS
from runyard.actors.stream_items import Finished
from runyard.actors.subscription import Subscription
from runyard.persistence.couch_store import CouchStore
from tests.cluster_helpers import Inbox, Node, Nodes, events, record
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.anyio, pytest.mark.couchdb, pytest.mark.timeout(90)]

CALLER = Caller("alice")
EVENTS = 20_000


@pytest.fixture
async def nodes(couch_url: str, couch_db_name: str) -> AsyncIterator[Nodes]:
    async with Nodes(couch_url, couch_db_name) as cluster:
        yield cluster


def through(url: str, port: int) -> str:
    """``url`` with its port replaced (credentials kept)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def running_run(store: CouchStore, run_id: str, commits: int) -> RunWrite:
    """``EVENTS`` events of ~230 bytes written in ``commits`` commits (chunks of 1 MB)."""
    header = record(run_id, "a")
    per = EVENTS // commits
    for k in range(commits):
        write = RunWrite(header, (k + 1) * per, events(per, start=k * per + 1))
        await store.save_many([write])
    return RunWrite(header, EVENTS)


async def finish(store: CouchStore, node: Node, mirror: pykka.ActorRef[Any], run_id: str) -> None:
    """The owner's final write, and the change its follower would tell the mirror."""
    final = record(run_id, "a", "success", updated_at=record(run_id, "a").updated_at + 5)
    done = Event(EVENTS + 1, final.started_at + 9, "done", {"status": "success"})
    await store.save_many([RunWrite(final, EVENTS + 1, (done,))])
    changed = await node.ask(ReadHeader(run_id))
    assert changed is not None
    mirror.tell(RunDocChanged(changed))


async def drain(sub: Subscription) -> tuple[list[int], Finished | None]:
    seqs: list[int] = []
    async for item in sub:
        if isinstance(item, Event):
            seqs.append(item.seq)
        elif isinstance(item, Finished):
            return seqs, item
    return seqs, None


class Mirrored:
    """A mirror on node ``b`` of run ``r`` (``EVENTS`` events stored, still running)."""

    def __init__(self, store: CouchStore, node: Node, proxy: TcpProxy) -> None:
        self.store = store
        self.node = node
        self.proxy = proxy
        self.registry = Inbox.start([])
        self.ref = MirrorActor.start(run_id="r", cluster=node.ref, registry=self.registry)

    async def close(self) -> None:
        if self.ref.is_alive():
            await ask_stop(self.ref)
        await ask_stop(self.registry)


@pytest.fixture
async def mirrored(nodes: Nodes, couch_url: str) -> AsyncIterator[Mirrored]:
    store = await nodes.store()
    await running_run(store, "r", commits=4)
    async with TcpProxy(urlsplit(couch_url).port or 0) as proxy:
        node = await nodes.start("b", url=through(couch_url, proxy.port), follow=False)
        mirror = Mirrored(store, node, proxy)
        try:
            yield mirror
        finally:
            await mirror.close()


async def test_a_subscriber_joins_at_the_first_page_and_gets_every_event_once(
    mirrored: Mirrored,
) -> None:
    sub: Subscription = await ask(mirrored.ref, Subscribe(CALLER, "r", 0))
    # Admitted once the first page was read, not after the whole catch-up (behind a
    # run still emitting, that is not before the run ends).
    assert sub.end_seq == PAGE_EVENTS
    await finish(mirrored.store, mirrored.node, mirrored.ref, "r")
    seqs, final = await drain(sub)
    assert seqs == list(range(1, EVENTS + 2))
    assert final is not None
    assert final.record.status == "success"


async def test_a_catch_up_reads_the_trace_a_few_times_not_once_per_page(
    mirrored: Mirrored,
) -> None:
    sub: Subscription = await ask(mirrored.ref, Subscribe(CALLER, "r", EVENTS - 1))
    async for item in sub:  # until the mirror holds the last event
        assert isinstance(item, Event), item
        assert item.seq == EVENTS
        break
    stored = sum(len(e.data_json) for e in events(EVENTS))
    # A read decodes whole 1 MB chunks from the first one it needs: asking for
    # PAGE_EVENTS small events at a time fetched this trace about 10 times over.
    assert mirrored.proxy.downloaded < 4 * stored, (mirrored.proxy.downloaded, stored)
