"""The changes follower of the CouchDB cluster backend: what one node hears of the others.

Nodes ``a`` and ``b`` follow one database of the test server (real CouchDB
3.5, else pouchdb-server); runs are written by CouchStores as the nodes'
persistence actors would. A "barrier" is a later change a follower must
see: changes come in order, so once it is seen, an earlier one that was not
delivered never will be. Failures are real: a TCP proxy cuts or freezes the
path of one node, and the server itself is restarted.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import anyio
import pytest

from runyard.actors.cluster_protocol import RunDeleted, RunDocChanged
from runyard.actors.persistence_protocol import RunWrite
from tests.cluster_helpers import Nodes, events, record
from tests.couchdb_fixtures import EXTERNAL_URL_ENV
from tests.couchdb_server import CouchTestServer
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.couchdb, pytest.mark.timeout(120)]


@pytest.fixture
async def nodes(couch_url: str, couch_db_name: str) -> Any:
    async with Nodes(couch_url, couch_db_name) as cluster:
        yield cluster


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_run_docs_of_other_nodes_reach_the_follower(nodes: Nodes) -> None:
    a = await nodes.start("a")
    b = await nodes.start("b")
    store_a, store_b = await nodes.store(), await nodes.store()
    header = dataclasses.replace(record("ra", "a"), input={"big": "z" * 300_000})  # spilled
    await store_a.save_many([RunWrite(header, 3, events(3))])
    seen = await b.wait_for(RunDocChanged, "ra at 3 events", write__run_id="ra")
    assert seen.write.event_count == 3
    assert seen.write.header.node == "a"
    assert seen.write.events == ()
    assert seen.write == await store_a.get_header("ra")
    await store_a.save_many([RunWrite(header, 5, events(2, start=4))])
    await b.wait_for(RunDocChanged, "ra at 5 events", write__event_count=5)
    await store_b.save(record("rb", "b", "success", n=4))
    got = await a.wait_for(RunDocChanged, "b's run", write__run_id="rb")
    assert (got.write.header.status, got.write.event_count) == ("success", 4)
    assert not [m for m in a.of(RunDocChanged) if m.write.run_id == "ra"]  # a's own
    await store_a.save(record("ra2", "a", n=1))
    await b.wait_for(RunDocChanged, "barrier", write__run_id="ra2")
    assert not [m for m in b.of(RunDocChanged) if m.write.run_id == "rb"]  # b's own
    # A deletion is heard by every node, the owner's included.
    assert await store_a.delete("ra") is True
    await b.wait_for(RunDeleted, "ra deleted", run_id="ra")
    await a.wait_for(RunDeleted, "ra deleted", run_id="ra")
    # Chunks, field parts and leases are no run docs: nothing else was delivered.
    assert {m.write.run_id for m in b.of(RunDocChanged)} == {"ra", "ra2"}


async def test_the_follower_starts_where_follow_was_answered(nodes: Nodes) -> None:
    store = await nodes.store()
    await store.save(record("before", "x", n=2))
    b = await nodes.start("b")
    await store.save(record("after", "x", n=1))
    await b.wait_for(RunDocChanged, "the run written after Follow", write__run_id="after")
    assert [m.write.run_id for m in b.of(RunDocChanged)] == ["after"]


async def test_the_follower_loses_no_change_while_its_connection_fails(
    nodes: Nodes, couch_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runyard.cluster")
    store = await nodes.store()
    async with TcpProxy(_port(couch_url)) as proxy:
        via_proxy = couch_url.replace(str(_port(couch_url)), str(proxy.port))
        b = await nodes.start("b", url=via_proxy, wait_s=1.0, timeout_s=1.0, retry_max_s=0.2)
        await store.save(record("first", "a", n=1))
        await b.wait_for(RunDocChanged, "a change before the failure", write__run_id="first")

        proxy.cut()  # connections reset, new ones refused
        await store.save(record("while-cut", "a", n=2))
        await _wait_warned(caplog, "changes follower of node b", "the cut")
        proxy.heal()
        await b.wait_for(RunDocChanged, "the change made while cut", write__run_id="while-cut")

        caplog.clear()
        proxy.freeze()  # a hung path: the longpoll must give up on its own
        await store.save(record("while-frozen", "a", n=3))
        await _wait_warned(caplog, "changes follower of node b", "the freeze")
        proxy.heal()
        await b.wait_for(
            RunDocChanged, "the change made while frozen", write__run_id="while-frozen"
        )
    assert [m.write.run_id for m in b.of(RunDocChanged)] == ["first", "while-cut", "while-frozen"]
    follower = [r for r in caplog.records if "changes follower" in r.getMessage()]
    assert all(r.exc_info is None for r in follower), "warnings, no tracebacks"
    assert any("following again" in r.getMessage() for r in follower)


async def test_the_follower_goes_on_after_couchdb_restarts(
    nodes: Nodes, couch_server: CouchTestServer
) -> None:
    if EXTERNAL_URL_ENV in os.environ:
        pytest.skip("the server is not ours to restart")
    a = await nodes.start("a", retry_max_s=0.5)
    b = await nodes.start("b", retry_max_s=0.5)
    store = await nodes.store()
    await store.save(record("before-restart", "a", n=1))
    await anyio.to_thread.run_sync(couch_server.restart)
    await store.save(record("after-restart", "a", n=2))
    await b.wait_for(RunDocChanged, "the change before the restart", write__run_id="before-restart")
    await b.wait_for(RunDocChanged, "the change after the restart", write__run_id="after-restart")
    # The leases are renewed again too.
    await a.wait_leases("b renewed after the restart", lambda leases: leases["b"].state == "alive")
    renewed = await b.wait_leases("a's lease", lambda leases: "a" in leases)
    await a.wait_leases(
        "a's lease renewed after the restart", lambda leases: leases["a"].rev != renewed["a"].rev
    )


async def _wait_warned(caplog: pytest.LogCaptureFixture, text: str, what: str) -> None:
    def warned() -> bool:
        return any(r.levelno == logging.WARNING and text in r.getMessage() for r in caplog.records)

    await wait_until_async(warned, 15, f"the follower's warning about {what}")
