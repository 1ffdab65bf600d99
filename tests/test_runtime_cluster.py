"""The runtime with a real cluster backend: membership, takeover and the follower's start.

One runtime (the node under test) and a second backend standing in for
another node, on one database of the test server (real CouchDB 3.5, else
pouchdb-server).  What the runtime does is judged from the store, the way
the other nodes see it.
"""

from __future__ import annotations

from typing import Any

import pytest

from runyard.actors.asyncio_actor import ask
from runyard.actors.cluster_protocol import ListNodes, NodeLease, RequestStop
from runyard.actors.config import RuntimeConfig
from runyard.actors.membership import ListMembers
from runyard.actors.messages import Caller, GetRun
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import RunRecord
from runyard.actors.runtime import Runtime
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.couch_cluster import CouchCluster
from runyard.persistence.couch_store import CouchStore
from tests.cluster_helpers import Nodes, events
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.couchdb, pytest.mark.timeout(90)]

ALICE = Caller("alice")


@pytest.fixture
async def nodes(couch_url: str, couch_db_name: str) -> Any:
    async with Nodes(couch_url, couch_db_name) as cluster:
        yield cluster


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _runtime(url: str, db: str, node_id: str, *, lease_s: float = 1.0) -> Runtime:
    store = CouchStore(url, db=db)
    config = RuntimeConfig(node_id=node_id, lease_s=lease_s, store_timeout_s=3.0)
    cluster = CouchCluster.start(url, db, node_id=node_id, lease_s=lease_s, timeout_s=3.0)
    runtime = Runtime(config, persistence=PersistenceActor.start(store), cluster=cluster)
    await runtime.start()
    return runtime


async def _leases(node: Any) -> dict[str, NodeLease]:
    leases: tuple[NodeLease, ...] = await node.ask(ListNodes())
    return {lease.node_id: lease for lease in leases}


async def test_a_node_whose_store_path_is_cut_at_start_follows_once_it_heals(
    nodes: Nodes, couch_url: str, couch_db_name: str
) -> None:
    other = await nodes.start("other")
    async with TcpProxy(_port(couch_url)) as proxy:
        proxy.cut()
        via_proxy = couch_url.replace(str(_port(couch_url)), str(proxy.port))
        runtime = await _runtime(via_proxy, couch_db_name, "late")  # starts, never hangs
        try:
            assert "late" not in await _leases(other)
            proxy.heal()

            async def leased() -> bool:
                return "late" in await _leases(other)

            await wait_until_async(leased, 30, "the late node's lease once the path healed")
        finally:
            await runtime.shutdown(grace_s=0)
    assert (await _leases(other))["late"].state == "stopped"


async def test_a_dead_nodes_runs_are_taken_over_once_and_a_requested_stop_is_kept(
    nodes: Nodes, couch_url: str, couch_db_name: str
) -> None:
    store = await nodes.store()
    proxy = await TcpProxy(_port(couch_url)).__aenter__()
    via_proxy = couch_url.replace(str(_port(couch_url)), str(proxy.port))
    dead = await nodes.start("dead", url=via_proxy)  # its lease is written, then never renewed
    # Three runs the dead node left running, two with a restart policy, one of
    # those asked to stop (the dead node never did).
    restart = {"restart": {"max_restarts": 2, "backoff_s": 0.0}}
    await store.save_many(
        [_running("plain", {}), _running("again", restart), _running("stop-asked", restart)]
    )
    await dead.ask(RequestStop("stop-asked", "dead", "alice", "stopped by alice"))
    proxy.cut()  # the node is gone: no renewal, no follower
    # Two survivors race for the takeover.
    a = await _runtime(couch_url, couch_db_name, "a")
    b = await _runtime(couch_url, couch_db_name, "b")
    try:

        async def ended() -> bool:
            plain_now = await store.get("plain")
            stop_now = await store.get("stop-asked")
            return bool(plain_now and plain_now.finished and stop_now and stop_now.finished)

        await wait_until_async(ended, 30, "the dead node's runs to end")
        for run_id in ("plain", "stop-asked"):
            record = await store.get(run_id)
            assert record is not None
            assert record.status == "error"
            assert "interrupted: node dead stopped" in (record.error or "")
            # The committed events kept, then the closing done.
            assert [(e.seq, e.type) for e in record.events] == [(1, "log"), (2, "log"), (3, "done")]

        # The restartable one goes on at one survivor, same id, after a restart event.
        async def resumed() -> bool:
            header = await store.get_header("again")
            return header is not None and header.header.node in ("a", "b")

        await wait_until_async(resumed, 30, "the restartable run to go on at a survivor")
        owner = a if (await store.get_header("again")).header.node == "a" else b  # type: ignore[union-attr]
        got = await owner.ask(GetRun(ALICE, "again"))
        assert got.status == "running"
        types = [e.type for e in got.events]
        assert types[:3] == ["log", "log", "restart"], types
        assert got.events[2].data["attempt"] == 1
        assert [e.seq for e in got.events] == list(range(1, len(types) + 1))

        async def dead_taken_over() -> bool:
            members = {m.node_id: m for m in await ask(a.membership, ListMembers())}
            dead = members["dead"]
            return dead.state == "taken_over" and dead.taken_over_by in ("a", "b")

        await wait_until_async(dead_taken_over, 10, "a's membership to see the takeover")
        members = {m.node_id: m for m in await ask(a.membership, ListMembers())}
        assert members["a"].state == members["b"].state == "alive"
    finally:
        await a.shutdown(grace_s=0)
        await b.shutdown(grace_s=0)
        await proxy.__aexit__(None, None, None)


def _running(run_id: str, options: dict[str, Any]) -> RunWrite:
    header = RunRecord(
        run_id=run_id,
        owner="alice",
        agent="ticker",
        status="running",
        input={"n": 1000, "interval": 0.05},
        started_at=1_800_000_000.0,
        updated_at=1_800_000_000.0,
        options=options,
        node="dead",
    )
    return RunWrite(header, 2, events(2))
