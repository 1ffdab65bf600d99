"""A run resumed on another node keeps its whole record: the output schema from its
stored options, and the ops it recorded before the takeover in its ``ops_log``.

A dead node (its lease written, then never renewed) left a run running with a
restart policy; a survivor takes it over, resumes it from its stored trace
and ends it.  Real CouchDB (else pouchdb-server), as ``tests/test_runtime_cluster.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from runyard.actors.config import RuntimeConfig
from runyard.actors.context import RunContext
from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event, RunRecord
from runyard.actors.runtime import Runtime
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.couch_cluster import CouchCluster
from runyard.persistence.couch_store import CouchStore
from tests.cluster_helpers import Nodes
from tests.runtime_helpers import catalog_with
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.anyio, pytest.mark.couchdb, pytest.mark.timeout(90)]

T0 = 1_800_000_000.0
SCHEMA = {"type": "object", "required": ["answer"]}


async def spender(input_dict: dict[str, Any], ctx: RunContext) -> Any:
    ctx.op("llm", "chat", tokens=5, duration_s=0.5)
    return {"attempt": ctx.attempt}  # no "answer": a schema warning


@pytest.fixture
async def nodes(couch_url: str, couch_db_name: str) -> Any:
    async with Nodes(couch_url, couch_db_name) as cluster:
        yield cluster


def _left_running() -> RunWrite:
    """What the dead node had stored of the run: two ops and a log line."""
    header = RunRecord(
        run_id="resumed",
        owner="alice",
        agent="spender",
        status="running",
        input={},
        started_at=T0,
        updated_at=T0,
        options={"restart": {"max_restarts": 1, "backoff_s": 0.0}, "output_schema": SCHEMA},
        node="dead",
    )
    trace = (
        Event(1, T0, "op", {"kind": "llm", "name": "chat", "tokens": 100, "cost": 0.25}),
        Event(2, T0, "op", {"kind": "tool", "name": "search", "duration_s": 1.0}),
        Event(3, T0, "log", {"line": "before the crash"}),
    )
    return RunWrite(header, 3, trace)


async def test_a_resumed_run_keeps_its_schema_and_counts_the_ops_before_the_takeover(
    nodes: Nodes, couch_url: str, couch_db_name: str
) -> None:
    store = await nodes.store()
    port = int(couch_url.rsplit(":", 1)[1])
    async with TcpProxy(port) as proxy:
        via_proxy = couch_url.replace(str(port), str(proxy.port))
        await nodes.start("dead", url=via_proxy)  # its lease is written, then never renewed
        await store.save_many([_left_running()])
        proxy.cut()
        config = RuntimeConfig(node_id="a", lease_s=1.0, store_timeout_s=3.0)
        cluster = CouchCluster.start(
            couch_url, couch_db_name, node_id="a", lease_s=1.0, timeout_s=3.0
        )
        runtime = Runtime(
            config,
            persistence=PersistenceActor.start(CouchStore(couch_url, db=couch_db_name)),
            cluster=cluster,
            catalog=catalog_with(spender=spender),
        )
        await runtime.start()
        try:

            async def finished() -> RunRecord | None:
                record = await store.get("resumed")
                return record if record is not None and record.finished else None

            record = await wait_until_async(finished, 60, "the resumed run to end at node a")
        finally:
            await runtime.shutdown(grace_s=0)
    assert record.status == "success", record.error
    assert record.result == {"attempt": 1}
    assert [e.type for e in record.events] == ["op", "op", "log", "restart", "op", "done"]
    assert record.options["output_schema"] == SCHEMA
    assert record.schema_warnings == [{"path": "", "message": "'answer' is a required property"}]
    assert record.ops_log == {
        "llm": {"count": 2, "tokens": 105, "cost": 0.25, "duration_s": 0.5},
        "tool": {"count": 1, "duration_s": 1.0},
    }
    assert record.events[-1].data["ops_log"] == record.ops_log
