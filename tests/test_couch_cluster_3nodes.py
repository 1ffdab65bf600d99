"""The cluster backend on a 3-node Apache CouchDB cluster: what a single server cannot show.

Each runyard node talks to another CouchDB node (``a`` to the first, ``b``
to the third, the writing store to the second), so a change is often fed
by one copy of a shard while a read is answered by another that has not
got it yet; seqs are opaque strings of the cluster; a claim can reach a
minority of copies (a 202). Needs ``../shared/couchdb`` (started here, about
8 s); skipped where only pouchdb-server is available.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runyard.actors.cluster_protocol import (
    ClaimNode,
    ListNodes,
    ReadEvents,
    RequestStop,
    RunDeleted,
    RunDocChanged,
    StopRequested,
)
from runyard.actors.persistence_protocol import RunWrite
from tests.cluster_helpers import Node, Nodes, events, record
from tests.couchdb_fixtures import server_kind
from tests.couchdb_server import ADMIN_PASSWORD, ADMIN_USER, free_port
from tests.real_couchdb import LAUNCHER, launcher_present
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.couchdb, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    if server_kind() != "real" or not launcher_present():
        pytest.skip(f"no real CouchDB here ({LAUNCHER})")
    where: Path = tmp_path_factory.mktemp("couch3")
    ports = ",".join(str(free_port()) for _ in range(3))
    command = [str(LAUNCHER), "cluster", "--ports", ports, "--dir", str(where)]
    started = subprocess.run(
        [*command, "--admin", f"{ADMIN_USER}:{ADMIN_PASSWORD}"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    try:
        if started.returncode != 0:
            pytest.fail(f"couchdb.sh cluster failed:\n{started.stderr}", pytrace=False)
        yield started.stdout.split()
    finally:
        subprocess.run(
            [str(LAUNCHER), "stop", "--dir", str(where)],
            capture_output=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
async def nodes(cluster_urls: list[str], couch_db_name: str) -> Any:
    async with Nodes(cluster_urls[1], couch_db_name) as cluster:
        yield cluster


async def _read_all(node: Node, run_id: str, count: int) -> None:
    """Ask ``ReadEvents`` until it holds ``count`` events; every answer a gap-free prefix."""

    async def complete() -> bool:
        got = await node.ask(ReadEvents(run_id, 0, 1000))
        assert [e.seq for e in got] == list(range(1, len(got) + 1)), "not a gap-free prefix"
        return len(got) == count

    await wait_until_async(complete, 15, f"{count} events of {run_id} readable")


async def test_followers_and_reads_across_cluster_nodes(
    nodes: Nodes, cluster_urls: list[str]
) -> None:
    a = await nodes.start("a", url=cluster_urls[0])
    b = await nodes.start("b", url=cluster_urls[2])
    store = await nodes.store(chunk_bytes=4096)  # through the second CouchDB node
    header = record("r", "a")
    for commit in range(5):
        count = (commit + 1) * 20
        await store.save_many([RunWrite(header, count, events(20, start=commit * 20 + 1))])
        seen = await b.wait_for(RunDocChanged, f"r at {count}", write__event_count=count)
        assert seen.write.header.node == "a"
        await _read_all(b, "r", count)
    assert await b.ask(ReadEvents("r", 0, 1000)) == await store.get_events("r", 0, 1000)
    await b.ask(RequestStop("r", node="a", by="bob", reason="across nodes"))
    await a.wait_for(StopRequested, "the stop request", run_id="r")
    assert await store.delete("r") is True
    await b.wait_for(RunDeleted, "the deletion", run_id="r")
    assert not a.of(RunDocChanged), "a's own run"


async def test_one_claim_wins_when_claimers_go_through_different_cluster_nodes(
    nodes: Nodes, cluster_urls: list[str]
) -> None:
    await nodes.store()  # the database
    claimers = [
        await nodes.start(name, url=url, follow=False)
        for name, url in zip(("a", "b", "c"), cluster_urls, strict=True)
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        for round_ in range(8):
            node_id = f"dead{round_}"
            body = {
                "type": "runyard.node",
                "node_id": node_id,
                "state": "alive",
                "lease_s": 1.0,
                "renewed_at": 1.0,
                "live_runs": 1,
                "draining": False,
                "taken_over_by": None,
            }
            put = await http.put(f"{cluster_urls[0]}/{nodes.db}/runyard-node:{node_id}", json=body)
            assert put.status_code in (201, 202)

            async def lease_seen_by_all(node_id: str = node_id) -> Any:
                seen = [
                    {x.node_id: x for x in await c.ask(ListNodes())}.get(node_id) for c in claimers
                ]
                return seen[0] if all(seen) and len({x.rev for x in seen}) == 1 else None

            lease = await wait_until_async(lease_seen_by_all, 15, f"{node_id}'s lease everywhere")
            won = await asyncio.gather(*(c.ask(ClaimNode(lease)) for c in claimers))
            assert won.count(True) == 1, (round_, won)
