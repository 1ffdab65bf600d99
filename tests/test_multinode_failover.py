"""Scale-out when a node goes away: ``kill -9``, a graceful drain, a restart.

Each test has a yard of its own (``yard_factory``, ``tests/multinode.py``),
since it leaves a node dead or gone.  The nodes renew their leases every
``LEASE_S / 3``; a node whose lease is not renewed for ``LEASE_S`` is dead,
and another node takes over its runs: they end ``error`` ("interrupted"),
and their streams end with ``done`` wherever the client reconnects.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from tests.api_helpers import TERMINAL, assert_error, get_run, wait_finished
from tests.multinode import LEASE_S, NODE_IDS, Yard, YardFactory
from tests.multinode_streams import Resumed, resumed_stream, stream_timeout
from tests.sse_frames import done_of
from tests.waiting import wait_until

pytestmark = [pytest.mark.server, pytest.mark.couchdb]


TAKEOVER_S = LEASE_S + 5
"""A dead node's runs end within its lease plus a few seconds (renewal ticks, the follower)."""


def follow_in_thread(
    pool: ThreadPoolExecutor, yard: Yard, run_id: str, node_id: str | None, per_connection: int
) -> Future[Resumed]:
    """Follow ``run_id`` to its end in ``pool``, on ``node_id`` or (None) through the balancer."""

    def follow() -> Resumed:
        node = yard.node(node_id) if node_id else None
        client = node.client(timeout=stream_timeout()) if node else None
        with client or yard.client(timeout=stream_timeout()) as c:
            served_by = (lambda _: node_id) if node_id else yard.owner_of
            return resumed_stream(
                c, run_id, served_by=served_by, per_connection=per_connection, deadline_s=40
            )

    return pool.submit(follow)


def assert_whole(seen: Resumed) -> dict[str, Any]:
    """Seqs 1..N exactly once each, ending in ``done``; the done payload."""
    assert seen.seqs == list(range(1, len(seen.seqs) + 1)), seen.seqs
    return done_of(seen.frames)


@pytest.mark.timeout(90)
def test_the_balancer_skips_a_killed_node_and_the_node_restarts_on_its_port(
    yard_factory: YardFactory,
) -> None:
    yard = yard_factory()
    before = {node_id: yard.start_on(node_id, "echo", n=node_id) for node_id in NODE_IDS}
    with yard.client() as client:
        for run_id in before.values():
            wait_finished(client, run_id)

    yard.node("n2").kill()
    with yard.client() as client:
        # Every request still succeeds: nginx moves on from the refused port
        # (a start too: it never reached the dead node).
        started = []
        for _ in range(3):
            answer = client.post("/runs", json={"agent": "echo", "input_dict": {}})
            assert answer.status_code == 202, answer.text
            assert yard.owner_of(answer) != "n2"
            started.append(answer.json()["run_id"])
        for run_id in [*before.values(), *started]:
            answer = client.get(f"/runs/{run_id}")
            assert answer.status_code == 200, answer.text
            assert yard.owner_of(answer) != "n2"
            assert wait_finished(client, run_id)["status"] == "success"

    yard.node("n2").start()
    with yard.node("n2").client() as client:
        for run_id in [*before.values(), *started]:
            assert get_run(client, run_id)["status"] == "success"
        assert client.post("/runs", json={"agent": "echo", "input_dict": {}}).status_code == 202


@pytest.mark.timeout(90)
def test_a_draining_node_refuses_starts_and_readiness_and_leaves_the_others_alone(
    yard_factory: YardFactory,
) -> None:
    yard = yard_factory(RUNYARD_SHUTDOWN_GRACE_S="3")
    draining = yard.start_on("n3", "sleeper", seconds=60)  # keeps n3 draining for its grace
    elsewhere = yard.start_on("n1", "sleeper", seconds=60)
    n3 = yard.node("n3")
    with n3.client() as client:
        assert client.get("/readyz").status_code == 200
        n3.terminate()
        wait_until(lambda: client.get("/readyz").status_code == 503, 5, "n3 to fail /readyz")
        answer = client.post("/runs", json={"agent": "echo", "input_dict": {}})
        assert_error(answer, 503, "shutting_down")
        assert get_run(client, draining)["status"] == "running"  # reads still answer
    with yard.node("n1").client() as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/runs", json={"agent": "echo", "input_dict": {}}).status_code == 202
    assert n3.wait_exit(30) == 0, n3.log_tail()
    with yard.client() as client:
        for _ in range(3):  # one round of the balancer: n3's port now refuses
            assert get_run(client, elsewhere)["status"] == "running"
        assert wait_finished(client, draining)["status"] in TERMINAL
    with yard.node("n1").client() as client:
        client.post(f"/runs/{elsewhere}/stop")


@pytest.mark.timeout(90)
def test_a_draining_nodes_runs_are_streamed_by_the_others_to_their_end(
    yard_factory: YardFactory,
) -> None:
    yard = yard_factory(RUNYARD_SHUTDOWN_GRACE_S="10")
    run_id = yard.start_on("n3", "ticker", n=40, interval=0.1)
    with ThreadPoolExecutor(2) as pool:
        mirrored = follow_in_thread(pool, yard, run_id, "n1", per_connection=10**6)
        balanced = follow_in_thread(pool, yard, run_id, None, per_connection=5)
        yard.node("n3").terminate()

        def n3_draining() -> bool:
            with yard.node("n1").client("root") as root:
                nodes = {n["node_id"]: n for n in root.get("/ops/registry").json()["nodes"]}
            return bool(nodes.get("n3", {}).get("draining"))

        wait_until(n3_draining, 2 * LEASE_S, "n1 to see n3 draining")
        for seen in (mirrored.result(), balanced.result()):
            assert seen.run_frames[0].data["status"] == "running", seen.run_frames
            assert assert_whole(seen) == {
                "status": "success",
                "result": {"ticks": 40},
                "error": None,
            }
    assert yard.node("n3").wait_exit(30) == 0


@pytest.mark.timeout(90)
def test_kill_9_of_the_owner_ends_its_run_interrupted_and_every_stream_with_done(
    yard_factory: YardFactory,
) -> None:
    yard = yard_factory()
    run_id = yard.start_on("n2", "ticker", n=400, interval=0.05)
    bystander = yard.start_on("n3", "sleeper", seconds=60)
    with ThreadPoolExecutor(3) as pool:
        streams = [
            follow_in_thread(pool, yard, run_id, "n1", per_connection=10**6),
            follow_in_thread(pool, yard, run_id, "n3", per_connection=10**6),
            follow_in_thread(pool, yard, run_id, None, per_connection=5),
        ]
        with yard.node("n1").client() as client:
            wait_until(lambda: get_run(client, run_id)["event_count"] >= 10, 10, "ticks")
        yard.node("n2").kill()
        with yard.client() as client:
            run = wait_finished(client, run_id, timeout=TAKEOVER_S)
        assert run["status"] == "error", run
        assert "interrupted" in run["error"], run
        ticks = [e for e in run["events"] if e["type"] == "tick"]
        assert [e["data"]["i"] for e in ticks] == list(range(1, len(ticks) + 1))
        assert run["events"][-1]["type"] == "done"
        assert [e["seq"] for e in run["events"]] == list(range(1, len(run["events"]) + 1))
        for stream in streams:
            seen = stream.result()
            done = assert_whole(seen)
            assert done["status"] == "error", done
            assert "interrupted" in done["error"], done
            assert seen.seqs == [e["seq"] for e in run["events"]]  # the stored trace, exactly
    # Every node now answers for the run as the store has it, and no node runs it;
    # the live node's run was not taken with it.
    for node_id in ("n1", "n3"):
        with yard.node(node_id).client() as client:
            assert get_run(client, run_id)["status"] == "error"
        with yard.node(node_id).client("root") as root:
            live = root.get("/ops/registry").json()["live"]
            assert run_id not in {r["run_id"] for r in live}
        with yard.node(node_id).client() as client:
            assert get_run(client, bystander)["status"] == "running"
