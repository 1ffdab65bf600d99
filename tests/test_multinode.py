"""Scale-out, black box: three runyard nodes on one CouchDB database behind nginx.

Every verb works on every node for a run that lives on another node, and
through a balancer with no stickiness: a client never has to know which
node owns its run.  These tests share one yard (``tests/multinode.py``)
and leave every node running; the ones that kill, drain or restart nodes
are in ``tests/test_multinode_failover.py``.

Runs are started on a chosen node directly (``yard.start_on``) when the
test needs to say who owns them, and through the balancer otherwise.
"""

from __future__ import annotations

import functools
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.api_helpers import get_run, wait_finished
from tests.multinode import LEASE_S, NODE_IDS, Yard
from tests.multinode_streams import FeedReader, Resumed, resumed_stream, stream_timeout
from tests.sse_frames import done_of, frames, trace_seqs
from tests.waiting import wait_until

pytestmark = [pytest.mark.server, pytest.mark.couchdb]


PAIRS = list(itertools.permutations(NODE_IDS, 2))
"""``(owner, other)``: every node, asked about a run of every other node."""


def status_on(yard: Yard, node_id: str, run_id: str) -> str:
    with yard.node(node_id).client() as client:
        status: str = get_run(client, run_id)["status"]
    return status


def status_of(client: httpx.Client, method: str, url: str) -> tuple[int, httpx.Response]:
    """The status of a request, read without its body (a wrongly granted stream never ends)."""
    with client.stream(method, url) as response:
        return response.status_code, response


def assert_ticker_trace(fs: list[Any], n: int) -> None:
    """A whole ticker stream: seqs 1..N with no gap or repeat, ``n`` ticks, ``done`` success."""
    seqs = trace_seqs(fs)
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert [f.data["data"]["i"] for f in fs if f.event == "tick"] == list(range(1, n + 1))
    assert done_of(fs) == {"status": "success", "result": {"ticks": n}, "error": None}


@pytest.mark.timeout(60)
def test_starts_through_the_balancer_land_on_every_node_and_every_node_reads_them(
    yard: Yard,
) -> None:
    owners: dict[str, str] = {}
    with yard.client() as client:
        for i in range(6):
            answer = client.post("/runs", json={"agent": "echo", "input_dict": {"i": i}})
            assert answer.status_code == 202, answer.text
            owners[answer.json()["run_id"]] = yard.owner_of(answer)
        for run_id in owners:
            wait_finished(client, run_id)
    # No stickiness: round robin spreads the starts over all three nodes.
    assert sorted(owners.values()) == sorted(NODE_IDS * 2), owners
    for node in yard.nodes.values():
        with node.client() as client:
            listed = {
                r["run_id"]: r for r in client.get("/runs", params={"limit": 1000}).json()["runs"]
            }
            for i, run_id in enumerate(owners):
                run = get_run(client, run_id)
                assert run["status"] == "success", (node.node_id, run)
                assert run["result"] == {"i": i}, run
                assert [e["type"] for e in run["events"]] == ["echo", "done"], run
                assert listed[run_id]["status"] == "success", (node.node_id, listed[run_id])


@pytest.mark.timeout(60)
def test_every_node_reads_a_live_run_of_another_node(yard: Yard) -> None:
    runs = {owner: yard.start_on(owner, "sleeper", seconds=60) for owner in NODE_IDS}
    try:
        for owner, other in PAIRS:
            with yard.node(other).client() as client:

                def with_events(c: httpx.Client = client, r: str = runs[owner]) -> Any:
                    run = get_run(c, r)
                    return run if run["events"] else None

                run = wait_until(with_events, 10, f"the sleeping event of {owner}'s run on {other}")
                assert run["status"] == "running", (owner, other, run)
                assert [e["type"] for e in run["events"]] == ["sleeping"], run
                listed = client.get("/runs", params={"status": "running", "limit": 1000})
                assert runs[owner] in {r["run_id"] for r in listed.json()["runs"]}, listed.text
    finally:
        for owner, run_id in runs.items():
            with yard.node(owner).client() as client:
                client.post(f"/runs/{run_id}/stop")


@pytest.mark.timeout(60)
def test_another_users_run_is_refused_alike_by_every_node_and_the_balancer(yard: Yard) -> None:
    run_id = yard.start_on("n1", "sleeper", seconds=60)
    try:
        requests = [
            ("GET", f"/runs/{run_id}"),
            ("GET", f"/runs/{run_id}/stream"),
            ("POST", f"/runs/{run_id}/stop"),
            ("DELETE", f"/runs/{run_id}"),
        ]
        # The owner node's answers are the reference: every node gives the same.
        with yard.node("n1").client("bob") as bob:
            reference = {r: status_of(bob, *r)[0] for r in requests}
        assert set(reference.values()) <= {403, 404}, reference
        for node in yard.others("n1"):
            with node.client("bob") as bob:
                assert {r: status_of(bob, *r)[0] for r in requests} == reference, node
        with yard.client("bob") as bob:
            for _ in range(3):  # one round over the three nodes
                for r in requests:
                    status, response = status_of(bob, *r)
                    assert status == reference[r], (r, yard.owner_of(response))
        for node in yard.nodes.values():
            with node.client() as alice:
                assert alice.get("/runs/no-such-run").status_code == 404
            with node.client("bob") as bob:
                listed = bob.get("/runs", params={"limit": 1000}).json()["runs"]
                assert run_id not in {r["run_id"] for r in listed}
        assert status_on(yard, "n1", run_id) == "running"  # bob's attempts did nothing
    finally:
        with yard.node("n1").client() as alice:
            alice.post(f"/runs/{run_id}/stop")


@pytest.mark.timeout(60)
def test_a_running_run_of_another_node_cannot_be_deleted_there(yard: Yard) -> None:
    runs = {owner: yard.start_on(owner, "sleeper", seconds=60) for owner in NODE_IDS}
    try:
        for owner, other in PAIRS:
            with yard.node(other).client() as client:
                answer = client.delete(f"/runs/{runs[owner]}")
                assert answer.status_code == 409, (owner, other, answer.text)
                assert answer.json()["error"]["code"] == "still_running", answer.text
        for owner, run_id in runs.items():
            assert status_on(yard, owner, run_id) == "running"
    finally:
        for owner, run_id in runs.items():
            with yard.node(owner).client() as client:
                client.post(f"/runs/{run_id}/stop")


@pytest.mark.timeout(60)
def test_a_new_node_leaves_the_live_runs_of_the_others_alone(yard: Yard) -> None:
    sleeper = yard.start_on("n1", "sleeper", seconds=60)
    ticker = yard.start_on("n2", "ticker", n=30, interval=0.1)
    try:
        # A node starting up on the database must reconcile only its own runs.
        newcomer = yard.add_node("n4")
        with newcomer.client() as client:
            assert get_run(client, sleeper)["status"] == "running"
        assert status_on(yard, "n1", sleeper) == "running"
        with yard.node("n2").client() as client:
            assert_ticker_trace(frames(client, ticker), 30)
        newcomer.terminate()
        assert newcomer.wait_exit(30) == 0, newcomer.log_tail()
        assert status_on(yard, "n1", sleeper) == "running"
    finally:
        with yard.node("n1").client() as client:
            client.post(f"/runs/{sleeper}/stop")


@pytest.mark.timeout(60)
def test_every_node_streams_a_live_run_of_another_node_to_its_end(yard: Yard) -> None:
    # Long enough (8 s) that every stream joins while its run is live, even on a busy machine.
    runs = {pair: yard.start_on(pair[0], "ticker", n=32, interval=0.25) for pair in PAIRS}

    def follow(pair: tuple[str, str]) -> Resumed:
        with yard.node(pair[1]).client(timeout=stream_timeout()) as client:
            return resumed_stream(
                client, runs[pair], served_by=lambda _: pair[1], per_connection=10**6
            )

    with ThreadPoolExecutor(len(PAIRS)) as pool:
        followed = dict(zip(PAIRS, pool.map(follow, PAIRS), strict=True))
    for pair, seen in followed.items():
        # Joined while the run was live on its owner, and followed to its end.
        assert seen.run_frames[0].data["status"] == "running", (pair, seen.run_frames)
        assert_ticker_trace(seen.frames, 32)


@pytest.mark.timeout(60)
def test_a_stream_resumed_through_the_balancer_moves_between_nodes_without_gap(
    yard: Yard,
) -> None:
    with yard.client(timeout=stream_timeout()) as client:
        answer = client.post(
            "/runs", json={"agent": "ticker", "input_dict": {"n": 60, "interval": 0.1}}
        )
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["run_id"]
        seen = resumed_stream(client, run_id, served_by=yard.owner_of, per_connection=4)
    assert seen.run_frames[0].data["status"] == "running", seen.run_frames[0]
    assert seen.seqs == list(range(1, len(seen.seqs) + 1)), seen.seqs
    assert_ticker_trace(seen.frames, 60)
    assert set(seen.served_by) == set(NODE_IDS), seen.served_by  # round robin, no stickiness
    # A finished run resumes anywhere too: from the middle, the rest exactly once.
    with yard.client() as client:
        for _ in NODE_IDS:
            rest = frames(client, run_id, last_event_id=30)
            assert trace_seqs(rest) == list(range(31, 62)), trace_seqs(rest)


@pytest.mark.timeout(60)
def test_every_node_stops_a_run_of_another_node(yard: Yard) -> None:
    runs = {pair: yard.start_on(pair[0], "sleeper", seconds=60) for pair in PAIRS}
    try:
        for (owner, other), run_id in runs.items():
            with yard.node(other).client() as client:
                answer = client.post(f"/runs/{run_id}/stop")
                assert answer.status_code == 202, (owner, other, answer.text)
        with yard.client() as client:
            for pair, run_id in runs.items():
                run = wait_finished(client, run_id, timeout=10)
                assert run["status"] == "stopped", (pair, run)
    finally:
        for (owner, _), run_id in runs.items():
            with yard.node(owner).client() as client:
                client.post(f"/runs/{run_id}/stop")


@pytest.mark.timeout(60)
def test_an_admin_stops_another_users_run_of_another_node(yard: Yard) -> None:
    """The remote stop request carries the admin's reason; non-admins stay refused."""
    run_id = yard.start_on("n1", "sleeper", seconds=60)
    try:
        with yard.node("n2").client("bob") as bob:
            assert bob.post(f"/runs/{run_id}/stop").status_code == 403
        assert status_on(yard, "n1", run_id) == "running"
        with yard.node("n2").client("root") as root:
            answer = root.post(f"/runs/{run_id}/stop")
            assert answer.status_code == 202, answer.text
            assert root.get(f"/runs/{run_id}").status_code == 403  # still not the admin's to read
        with yard.node("n3").client() as alice:
            run = wait_finished(alice, run_id, timeout=10)
        assert (run["status"], run["error"]) == ("stopped", "stopped by admin root")
    finally:
        with yard.node("n1").client() as alice:
            alice.post(f"/runs/{run_id}/stop")


@pytest.mark.timeout(60)
def test_every_node_deletes_a_finished_run_of_another_node_for_all(yard: Yard) -> None:
    runs = {pair: yard.start_on(pair[0], "echo", pair=list(pair)) for pair in PAIRS}
    with yard.client() as client:
        for run_id in runs.values():
            wait_finished(client, run_id)
    for (owner, other), run_id in runs.items():
        with yard.node(other).client() as client:
            answer = client.delete(f"/runs/{run_id}")
            assert answer.status_code == 204, (owner, other, answer.text)
    # Gone everywhere, the owner's memory of the finished run included: at
    # once from the store, and from the others' memory as soon as they hear.
    gone = set(runs.values())

    def forgotten_by(client: httpx.Client) -> bool:
        listed = client.get("/runs", params={"limit": 1000}).json()["runs"]
        return not gone & {r["run_id"] for r in listed} and all(
            client.get(f"/runs/{run_id}").status_code == 404 for run_id in gone
        )

    for node in yard.nodes.values():
        with node.client() as client:
            wait_until(functools.partial(forgotten_by, client), 5, f"{node.node_id} to forget")


@pytest.mark.timeout(60)
def test_the_feed_of_every_node_shows_the_runs_of_every_node(yard: Yard) -> None:
    with (
        FeedReader(yard.node("n1").client(timeout=stream_timeout())) as on_n1,
        FeedReader(yard.node("n3").client(timeout=stream_timeout())) as on_n3,
        FeedReader(yard.client(timeout=stream_timeout())) as balanced,
    ):
        bobs = yard.start_on("n2", "echo", user="bob")
        # Runs long enough for "running" to be a state the followers can see
        # (CouchDB's _changes shows a document's latest revision only).
        runs = {owner: yard.start_on(owner, "ticker", n=3, interval=0.3) for owner in NODE_IDS}
        with yard.client() as client:
            for run_id in runs.values():
                wait_finished(client, run_id)
            assert client.delete(f"/runs/{runs['n2']}").status_code == 204
        wanted = {("run_started", r) for r in runs.values()}
        wanted |= {("run_finished", r) for r in runs.values()}
        wanted.add(("run_deleted", runs["n2"]))
        for feed in (on_n1, on_n3, balanced):
            changes = feed.until(wanted)
            assert bobs not in {run_id for _, run_id in changes}, changes  # alice's feed only
            for run_id in runs.values():
                kinds = [kind for kind, r in changes if r == run_id]
                assert kinds.index("run_started") < kinds.index("run_finished"), kinds


@pytest.mark.timeout(60)
def test_the_registry_lists_the_live_nodes_with_their_runs(yard: Yard) -> None:
    sleeper = yard.start_on("n2", "sleeper", seconds=60)
    try:

        def nodes_seen_by(node_id: str) -> dict[str, dict[str, Any]] | None:
            with yard.node(node_id).client("root") as root:
                answer = root.get("/ops/registry")
            assert answer.status_code == 200, answer.text
            nodes = {n["node_id"]: n for n in answer.json()["nodes"]}
            return nodes if nodes.get("n2", {}).get("live_runs", 0) >= 1 else None

        for node_id in NODE_IDS:
            nodes = wait_until(
                functools.partial(nodes_seen_by, node_id), 3 * LEASE_S, f"n2's run on {node_id}"
            )
            alive = {n for n, lease in nodes.items() if lease["state"] == "alive"}
            assert set(NODE_IDS) <= alive, nodes
            for lease in (nodes[n] for n in NODE_IDS):
                assert set(lease) >= {"node_id", "lease_age_s", "live_runs", "draining", "state"}
                assert 0 <= lease["lease_age_s"] < LEASE_S, lease
                assert lease["draining"] is False, lease
        with yard.node("n1").client() as alice:
            assert alice.get("/ops/registry").status_code == 403  # admins only
    finally:
        with yard.node("n2").client() as client:
            client.post(f"/runs/{sleeper}/stop")
