"""The CouchDB cluster backend (``CouchCluster``): leases, claims, stop requests, reads.

Two or three backends (nodes ``a``, ``b``, ...) share one database of the
test server (real CouchDB 3.5 where ``../shared/couchdb`` is present, else
pouchdb-server), each with its own session, as nodes on separate machines
would. Leases last 1 s (renewed every 1/3 s), so every wait is short; waits
poll with a deadline. The changes follower has its own suite
(``tests/test_couch_cluster_follower.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import httpx
import pytest

from runyard.actors.asyncio_actor import ask_stop
from runyard.actors.cluster_protocol import (
    ClaimNode,
    Follow,
    ListNodes,
    NodeLease,
    NodeStatus,
    ReadEvents,
    ReadHeader,
    RequestStop,
    RunDocChanged,
    StopRequested,
)
from runyard.actors.errors import StoreUnavailable
from runyard.actors.persistence_protocol import RunWrite
from runyard.persistence.couch_leases import LEFT_LEASE_KEEP_S
from runyard.persistence.couch_requests import INDEXES
from tests.cluster_helpers import Inbox, Nodes, events, record
from tests.couchdb_server import free_port
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.couchdb, pytest.mark.timeout(90)]


@pytest.fixture
async def nodes(couch_url: str, couch_db_name: str) -> Any:
    async with Nodes(couch_url, couch_db_name) as cluster:
        yield cluster


def _lease_doc(node_id: str, state: str = "alive") -> dict[str, Any]:
    """A lease as a node that died would have left it."""
    return {
        "type": "runyard.node",
        "node_id": node_id,
        "state": state,
        "lease_s": 1.0,
        "renewed_at": 1_700_000_000.0,
        "live_runs": 2,
        "draining": False,
        "taken_over_by": None,
    }


async def _put(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        answer = await http.put(path, json=body)
        assert answer.status_code in (201, 202), answer.text
        return dict(answer.json())


def _gen(rev: str) -> int:
    """The edit count ``N`` of a rev ``N-hash``."""
    return int(rev.split("-", 1)[0])


async def _get(url: str, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return await http.get(path, params=params)


# ------------------------------------------------------------------ leases


async def test_nodes_see_each_others_leases_renewed(nodes: Nodes) -> None:
    a = await nodes.start("a")
    b = await nodes.start("b")
    both = await a.wait_leases("both leases", lambda leases: {"a", "b"} <= set(leases))
    assert both["b"].state == "alive"
    assert both["b"].lease_s == 1.0
    first_rev = both["b"].rev
    renewed = await a.wait_leases(
        "b's lease renewed", lambda leases: leases["b"].rev != first_rev, timeout=10
    )
    assert renewed["b"].renewed_at >= both["b"].renewed_at
    # What the next renewal writes: the status the runtime last told.
    b.ref.tell(NodeStatus(live_runs=3, draining=True))
    status = await a.wait_leases("b's status", lambda leases: leases["b"].live_runs == 3)
    assert status["b"].draining is True
    listed = await b.ask(ListNodes())
    assert isinstance(listed, tuple)
    assert [lease.node_id for lease in listed] == ["a", "b"]
    assert all(isinstance(lease, NodeLease) and lease.state == "alive" for lease in listed)


async def test_a_stopped_node_leaves_its_lease_stopped(nodes: Nodes) -> None:
    a = await nodes.start("a")
    b = await nodes.start("b")
    await ask_stop(a.ref, timeout=30)
    assert not a.ref.is_alive()
    leases = {lease.node_id: lease for lease in await b.ask(ListNodes())}
    assert leases["a"].state == "stopped"
    assert leases["b"].state == "alive"


async def test_leases_of_nodes_gone_for_a_day_are_forgotten_and_the_rest_kept(
    nodes: Nodes,
) -> None:
    await nodes.store()  # the database
    day_ago = time.time() - LEFT_LEASE_KEEP_S - 60
    for node_id, state, renewed_at in [
        ("left-long-ago", "stopped", day_ago),
        ("taken-long-ago", "taken_over", day_ago),
        ("left-recently", "stopped", time.time() - 60),
        ("dead-long-ago", "alive", day_ago),  # never claimed: a claim comes first
    ]:
        body = {**_lease_doc(node_id, state), "renewed_at": renewed_at}
        await _put(nodes.url, f"/{nodes.db}/runyard-node:{node_id}", body)
    # A node's renewals read the leases: the two gone for over a day disappear.
    a = await nodes.start("a")

    async def listed() -> set[str] | None:
        ids = {lease.node_id for lease in await a.ask(ListNodes())}
        return ids if "taken-long-ago" not in ids and "left-long-ago" not in ids else None

    kept = await wait_until_async(listed, 15, "the day-old leases to be forgotten", interval=0.1)
    assert kept is not None
    assert {"left-recently", "dead-long-ago"} <= kept


async def test_exactly_one_of_concurrent_claims_wins(nodes: Nodes) -> None:
    await nodes.store()  # the database
    await _put(nodes.url, f"/{nodes.db}/runyard-node:dead", _lease_doc("dead"))
    claimers = [await nodes.start(node_id, follow=False) for node_id in ("a", "b", "c")]
    (dead,) = [lease for lease in await claimers[0].ask(ListNodes()) if lease.node_id == "dead"]
    won = await asyncio.gather(*(node.ask(ClaimNode(dead)) for node in claimers))
    assert sorted(won) == [False, False, True]
    winner = claimers[won.index(True)].node_id
    (claimed,) = [lease for lease in await claimers[0].ask(ListNodes()) if lease.node_id == "dead"]
    assert (claimed.state, claimed.taken_over_by) == ("taken_over", winner)
    assert claimed.live_runs == 2  # what the dead node had, for the claimer to see
    # A claim naming a rev that is gone loses.
    assert await claimers[0].ask(ClaimNode(dead)) is False


async def test_a_renewal_that_finds_its_lease_taken_over_writes_it_alive_again(
    nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runyard.cluster")
    await nodes.start("a")
    b = await nodes.start("b")

    async def claim_a() -> NodeLease | None:
        (lease,) = [x for x in await b.ask(ListNodes()) if x.node_id == "a"]
        return lease if await b.ask(ClaimNode(lease)) else None  # lost to a renewal: again

    claimed = await wait_until_async(claim_a, 15, "b's claim of a's lease")
    alive = await b.wait_leases(
        "a alive again",
        lambda leases: leases["a"].state == "alive" and _gen(leases["a"].rev) > _gen(claimed.rev),
    )
    assert alive["a"].taken_over_by is None
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name == "runyard.cluster"
    ]
    assert errors, "the renewal must log an ERROR"
    assert "taken over by node b" in errors[0].getMessage()


# ------------------------------------------------------------ stop requests


async def test_a_stop_request_is_stored_once_and_reaches_the_owner_only(nodes: Nodes) -> None:
    a = await nodes.start("a")
    b = await nodes.start("b")
    assert await b.ask(RequestStop("r1", node="a", by="bob", reason="user asked")) is None
    assert await b.ask(RequestStop("r1", node="a", by="bob", reason="again")) is None  # a repeat
    stop = await a.wait_for(StopRequested, "the stop request", run_id="r1")
    assert (stop.by, stop.reason) == ("bob", "user asked")
    doc = (await _get(nodes.url, f"/{nodes.db}/r1:request:stop")).json()
    assert {k: doc[k] for k in ("type", "run_id", "node", "by")} == {
        "type": "runyard.request",
        "run_id": "r1",
        "node": "a",
        "by": "bob",
    }
    # A later change that b must see: by then b's follower has passed the request.
    store_a = await nodes.store()
    await store_a.save(record("later", "a", n=1))
    await b.wait_for(RunDocChanged, "a's later run", write__run_id="later")
    assert b.of(StopRequested) == []
    assert len(a.of(StopRequested)) == 1


async def test_a_stop_request_names_the_new_owner_of_a_run_taken_over(nodes: Nodes) -> None:
    a = await nodes.start("a")
    c = await nodes.start("c")
    await c.ask(RequestStop("r2", node="dead", by="bob", reason="first"))
    await c.ask(RequestStop("r2", node="a", by="bob", reason="after the takeover"))
    stop = await a.wait_for(StopRequested, "the request naming a", run_id="r2")
    assert stop.reason == "after the takeover"


async def test_deleting_a_run_deletes_its_stop_request(nodes: Nodes) -> None:
    b = await nodes.start("b", follow=False)
    store = await nodes.store()
    await store.save(record("gone", "a", n=2))
    await b.ask(RequestStop("gone", node="a", by="bob", reason="x"))
    assert await store.delete("gone") is True
    assert (await _get(nodes.url, f"/{nodes.db}/gone:request:stop")).status_code == 404


async def test_lease_and_request_docs_stay_out_of_every_run_query(nodes: Nodes) -> None:
    a = await nodes.start("a")
    store = await nodes.store()
    await store.save(record("old", "a", "success", n=2))
    await store.save(record("live", "a", n=1))
    await a.ask(RequestStop("live", node="a", by="alice", reason="x"))
    await a.ask(RequestStop("old", node="a", by="alice", reason="x"))
    # (left a minute ago: a lease gone for a day would be forgotten by a's renewals)
    gone = {**_lease_doc("gone", "stopped"), "renewed_at": time.time() - 60}
    await _put(nodes.url, f"/{nodes.db}/runyard-node:gone", gone)
    for owner in ("alice", "bob", "a"):
        listed = await store.list_for_user(owner, limit=100)
        assert {s.run_id for s in listed} <= {"old", "live"}
    assert [w.run_id for w in await store.find_unfinished()] == ["live"]
    assert [w.run_id for w in await store.find_unfinished("a")] == ["live"]
    # Every Mango index the store queries holds run docs only.
    async with httpx.AsyncClient(base_url=nodes.url, timeout=30) as http:
        for ddoc, name, fields in INDEXES:
            everything = {"$gt": 0} if fields[0] == "finished_at" else {"$gte": ""}
            body = {
                "selector": {fields[0]: everything},
                "fields": ["_id"],
                "use_index": [ddoc, name],
                "limit": 1000,
            }
            answer = await http.post(f"/{nodes.db}/_find", json=body)
            assert answer.status_code == 200, answer.text
            ids = {doc["_id"] for doc in answer.json()["docs"]}
            # Both runs are personal: no workspace field, so not in the workspace index.
            expected = {"finished_at": {"old"}, "workspace": set()}.get(fields[0], {"old", "live"})
            assert ids == expected, name
    assert await store.purge_older_than(2e9) == 1
    assert (await _get(nodes.url, f"/{nodes.db}/runyard-node:gone")).status_code == 200
    assert (await _get(nodes.url, f"/{nodes.db}/runyard-node:a")).status_code == 200
    assert (await _get(nodes.url, f"/{nodes.db}/live:request:stop")).status_code == 200
    assert (await _get(nodes.url, f"/{nodes.db}/old:request:stop")).status_code == 404


# ------------------------------------------------------------------ reads


async def test_read_header_and_events_answer_as_the_store_does(nodes: Nodes) -> None:
    b = await nodes.start("b", follow=False)
    store = await nodes.store(chunk_bytes=4096)
    big = {"text": "y" * 20_000}  # spilled into field parts
    header = dataclasses.replace(record("r", "a"), input=big)
    await store.save_many([RunWrite(header, 30, events(30))])
    await store.save_many([RunWrite(header, 45, events(15, start=31))])
    await store.save(record("whole", "a", "success", n=7, result={"ok": True}))
    for run_id in ("r", "whole", "missing"):
        assert await b.ask(ReadHeader(run_id)) == await store.get_header(run_id)
    read_header = await b.ask(ReadHeader("r"))
    assert read_header.event_count == 45
    assert read_header.header.input == big
    for run_id, after, limit in [
        ("r", 0, 1000),
        ("r", 0, 10),
        ("r", 28, 5),
        ("r", 44, 10),
        ("r", 45, 10),
        ("r", -3, 2),
        ("r", 0, 0),
        ("whole", 0, 100),
        ("whole", 3, 2),
        ("missing", 0, 10),
    ]:
        want = await store.get_events(run_id, after, limit)
        assert await b.ask(ReadEvents(run_id, after, limit)) == want, (run_id, after, limit)
    assert [e.seq for e in await b.ask(ReadEvents("r", 0, 1000))] == list(range(1, 46))


async def test_read_events_returns_only_the_prefix_before_a_chunk_not_readable_yet(
    nodes: Nodes,
) -> None:
    b = await nodes.start("b", follow=False)
    store = await nodes.store(chunk_bytes=4096)
    header = record("r", "a")
    for start in (1, 11, 21):
        await store.save_many([RunWrite(header, start + 9, events(10, start=start))])
    # The chunk holding seqs 11..20 is not there (as on a cluster copy that lags).
    rows = (
        await _get(
            nodes.url,
            f"/{nodes.db}/_all_docs",
            startkey='"r:e:"',
            endkey='"r:e:\ufff0"',
        )
    ).json()["rows"]
    middle = [row for row in rows if row["id"].startswith("r:e:000000000020:")]
    assert middle, rows
    async with httpx.AsyncClient(base_url=nodes.url, timeout=30) as http:
        for row in middle:
            gone = await http.delete(
                f"/{nodes.db}/{row['id']}", params={"rev": row["value"]["rev"]}
            )
            assert gone.status_code in (200, 202)
    prefix = await b.ask(ReadEvents("r", 0, 100))
    assert [e.seq for e in prefix] == list(range(1, 11))
    assert await b.ask(ReadEvents("r", 10, 100)) == []
    assert [e.seq for e in await b.ask(ReadEvents("r", 20, 100))] == list(range(21, 31))


# ---------------------------------------------------------------- failures


async def test_asks_fail_with_store_unavailable_when_couchdb_is_away(
    nodes: Nodes, couch_url: str
) -> None:
    closed = couch_url.replace(couch_url.rsplit(":", 1)[1], str(free_port()))
    away = await nodes.start("a", url=closed, follow=False, timeout_s=2.0)
    with pytest.raises(
        StoreUnavailable, match=r"CouchDB at http://127\.0\.0\.1:\d+ .* failed ListNodes"
    ):
        await away.ask(ListNodes())
    with pytest.raises(StoreUnavailable) as refused:
        await away.ask(RequestStop("r", node="b", by="x", reason="y"))
    assert "admin-secret" not in str(refused.value)
    inbox = Inbox.start([])
    try:
        with pytest.raises(StoreUnavailable, match="failed Follow"):
            await away.ask(Follow(to=inbox, membership=inbox))
    finally:
        await ask_stop(inbox)
    port = int(couch_url.rsplit(":", 1)[1])
    async with TcpProxy(port) as proxy:
        proxy.freeze()
        frozen = await nodes.start(
            "f", url=couch_url.replace(str(port), str(proxy.port)), follow=False, timeout_s=1.0
        )
        started = asyncio.get_running_loop().time()
        with pytest.raises(StoreUnavailable, match="did not answer ReadHeader within 1 s"):
            await frozen.ask(ReadHeader("r"))
        assert asyncio.get_running_loop().time() - started < 5
