"""Workspaces through a real server: who may list, read, stream, follow, stop, delete.

Users (a tokens file): ``alice`` and ``bob`` are members of ``ml``, ``carol``
administers ``ml``, ``dave`` is a member of ``ops`` only and ``root`` is a
server admin in no workspace.  alice starts the runs; every verb is tried by
the owner, a member, the workspace admin and outsiders, on runs in memory
and on runs only the store holds (evicted), since those take different
paths through the registry.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from runyard.actors.messages import Evict
from tests.api_helpers import assert_error, get_run, wait_finished
from tests.live_server import LiveServer, LiveServerFactory
from tests.sse_frames import Frame, done_of, frames, iter_frames

pytestmark = pytest.mark.server

USERS = ("alice", "bob", "carol", "dave", "root")
TOKENS_FILE = """
[[users]]
id = "alice"
token = "alice-token"
workspaces = ["ml"]

[[users]]
id = "bob"
token = "bob-token"
workspaces = ["ml"]

[[users]]
id = "carol"
token = "carol-token"
workspaces = ["ml"]
workspace_admin = ["ml"]

[[users]]
id = "dave"
token = "dave-token"
workspaces = ["ops"]

[[users]]
id = "root"
token = "root-token"
admin = true
"""


@pytest.fixture(scope="module")
def live(live_server: LiveServerFactory, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    path = tmp_path_factory.mktemp("tokens") / "tokens.toml"
    path.write_text(TOKENS_FILE, encoding="utf-8")
    return live_server(tokens=None, tokens_file=path, heartbeat_s=0.2)


@pytest.fixture
def users(live: LiveServer) -> Iterator[dict[str, httpx.Client]]:
    clients = {
        user: httpx.Client(
            base_url=live.base_url,
            headers={"Authorization": f"Bearer {user}-token"},
            timeout=30,
        )
        for user in USERS
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


def start(client: httpx.Client, agent: str, workspace: str | None, **input_dict: Any) -> str:
    body: dict[str, Any] = {"agent": agent, "input_dict": input_dict}
    if workspace is not None:
        body["workspace"] = workspace
    resp = client.post("/runs", json=body)
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["run_id"]
    return run_id


def listed(client: httpx.Client, **params: str) -> dict[str, str | None]:
    """``run_id -> workspace`` of the caller's whole run list (one big page)."""
    resp = client.get("/runs", params={"limit": "1000", **params})
    assert resp.status_code == 200, resp.text
    return {r["run_id"]: r["workspace"] for r in resp.json()["runs"]}


def evict(live: LiveServer, run_id: str) -> None:
    """Drop the finished run from memory: from now on only the store answers for it."""
    assert live.gateway.runtime.registry.ask(Evict(run_id), timeout=5) == 1


@pytest.mark.timeout(30)
def test_a_run_starts_in_a_workspace_of_the_caller_only(
    live: LiveServer, users: dict[str, httpx.Client]
) -> None:
    alice, dave, root = users["alice"], users["dave"], users["root"]
    shared = start(alice, "echo", "ml", x=1)
    run = wait_finished(alice, shared)
    assert (run["owner"], run["workspace"], run["status"]) == ("alice", "ml", "success")
    personal = start(alice, "echo", None)
    assert wait_finished(alice, personal)["workspace"] is None

    message = assert_error(
        dave.post("/runs", json={"agent": "echo", "workspace": "ml"}), 403, "forbidden"
    )
    assert "'ml'" in message
    assert_error(root.post("/runs", json={"agent": "echo", "workspace": "ml"}), 403, "forbidden")
    for bad in ("", "two words", "-ml", "w" * 65, "ml/x"):
        assert_error(alice.post("/runs", json={"agent": "echo", "workspace": bad}), 422)
    # The run-code routes take the same field, with the same answers.
    code = "async def run(input_dict, ctx):\n    return 1\n"
    for route in ("/agents/run-code/start", "/agents/run-code/stream"):
        assert_error(dave.post(route, json={"code": code, "workspace": "ml"}), 403, "forbidden")
        assert_error(alice.post(route, json={"code": code, "workspace": "no such"}), 422)
    resp = alice.post("/agents/run-code/start", json={"code": code, "workspace": "ml"})
    assert resp.status_code == 202, resp.text
    coded = wait_finished(users["bob"], resp.json()["run_id"])  # a member reads it
    assert (coded["owner"], coded["workspace"], coded["result"]) == ("alice", "ml", 1)


@pytest.mark.timeout(60)
def test_members_list_read_and_stream_a_workspace_run_and_outsiders_never_see_it(
    live: LiveServer, users: dict[str, httpx.Client]
) -> None:
    alice = users["alice"]
    shared = start(alice, "echo", "ml", n=1)
    personal = start(alice, "echo", None)
    running = start(alice, "sleeper", "ml", seconds=300)
    stored = start(alice, "echo", "ml", n=2)
    for run_id in (shared, personal, stored):
        wait_finished(alice, run_id)
    evict(live, stored)

    mine = listed(alice)
    assert {shared: "ml", personal: None, running: "ml", stored: "ml"}.items() <= mine.items()
    for member in ("bob", "carol"):
        client = users[member]
        seen = listed(client)
        assert {shared, running, stored} <= set(seen), member
        assert personal not in seen, member
        in_ml = listed(client, workspace="ml")
        assert {shared, running, stored} <= set(in_ml), member
        assert set(in_ml.values()) == {"ml"}, member
        for run_id in (shared, stored):  # from memory, then from the store only
            assert get_run(client, run_id)["workspace"] == "ml"
            assert done_of(frames(client, run_id))["status"] == "success"
        assert_error(client.get(f"/runs/{personal}"), 403, "forbidden")
        # A live run streams to a member too: the first frame names it, running.
        [first] = frames(client, running, limit=1)
        assert first.event == "run", first
        assert (first.data["run_id"], first.data["status"]) == (running, "running")

    for outsider in ("dave", "root"):
        client = users[outsider]
        seen = listed(client)
        assert not {shared, personal, running, stored} & set(seen), outsider
        for run_id in (shared, personal, running, stored):
            assert_error(client.get(f"/runs/{run_id}"), 403, "forbidden")
            with connect_sse(client, "GET", f"/runs/{run_id}/stream") as es:
                assert es.response.status_code == 403, outsider
        assert_error(client.get("/runs", params={"workspace": "ml"}), 403, "forbidden")
    assert_error(alice.get("/runs", params={"workspace": "bad name"}), 422)
    assert alice.post(f"/runs/{running}/stop").status_code == 202  # tidy up


@pytest.mark.timeout(60)
def test_stop_and_delete_are_for_the_owner_and_the_workspace_admins(
    live: LiveServer, users: dict[str, httpx.Client]
) -> None:
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    by_admin = start(alice, "sleeper", "ml", seconds=300)
    by_owner = start(alice, "sleeper", "ml", seconds=300)

    message = assert_error(bob.post(f"/runs/{by_admin}/stop"), 403, "forbidden")
    assert "only its owner and the admins of workspace 'ml'" in message
    message = assert_error(users["dave"].post(f"/runs/{by_admin}/stop"), 403, "forbidden")
    assert "belongs to another user" in message  # nothing about the run to outsiders
    resp = carol.post(f"/runs/{by_admin}/stop")
    assert resp.status_code == 202, resp.text
    stopped = wait_finished(alice, by_admin)
    assert stopped["status"] == "stopped"
    assert stopped["error"] == "stopped by carol (admin of workspace 'ml')"  # the owner sees who
    resp = alice.post(f"/runs/{by_owner}/stop")
    assert resp.status_code == 202, resp.text
    assert wait_finished(alice, by_owner)["status"] == "stopped"

    evict(live, by_admin)  # the admin's delete goes through the store's path
    for refused in ("bob", "dave", "root"):
        for run_id in (by_admin, by_owner):
            assert_error(users[refused].delete(f"/runs/{run_id}"), 403, "forbidden")
    assert carol.delete(f"/runs/{by_admin}").status_code == 204
    assert alice.delete(f"/runs/{by_owner}").status_code == 204
    for run_id in (by_admin, by_owner):
        assert_error(alice.get(f"/runs/{run_id}"), 404, "run_not_found")


@pytest.mark.timeout(60)
def test_stopping_a_run_only_the_store_holds_checks_the_same_rule(
    live: LiveServer, users: dict[str, httpx.Client]
) -> None:
    """A finished, evicted run: a member is refused (403) before the store is
    asked whether it can be stopped; the admin hears it already finished (409)."""
    alice = users["alice"]
    run_id = start(alice, "echo", "ml")
    wait_finished(alice, run_id)
    evict(live, run_id)
    assert_error(users["bob"].post(f"/runs/{run_id}/stop"), 403, "forbidden")
    assert_error(users["dave"].post(f"/runs/{run_id}/stop"), 403, "forbidden")
    assert_error(users["root"].post(f"/runs/{run_id}/stop"), 403, "forbidden")  # finished
    assert_error(users["carol"].post(f"/runs/{run_id}/stop"), 409, "already_finished")


class Feed:
    """One open ``/runs/feed`` stream, read frame by frame (past ``ready``).

    A thread reads the stream into a queue, so a change that never comes
    fails the test after ``WAIT_S`` instead of hanging it (feed frames carry
    no ids, so the SSE client hands the test no heartbeats to wake on).
    """

    WAIT_S = 10.0

    def __init__(self, client: httpx.Client, **params: str) -> None:
        self._cm = connect_sse(client, "GET", "/runs/feed", params=params)
        es = self._cm.__enter__()
        assert es.response.status_code == 200, es.response.read()
        self._queue: queue.Queue[Frame | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(es,), daemon=True)
        self._reader.start()
        assert self.next().event == "ready"

    def _read(self, es: Any) -> None:
        try:
            for frame in iter_frames(es):
                self._queue.put(frame)
        except httpx.HTTPError:
            pass  # closed by the test
        finally:
            self._queue.put(None)

    def next(self) -> Frame:
        try:
            frame = self._queue.get(timeout=self.WAIT_S)
        except queue.Empty:
            raise AssertionError("no change on the feed in time") from None
        assert frame is not None, "the feed ended"
        return frame

    def change(self) -> tuple[str, str, str | None]:
        """The next change as ``(event, run_id, workspace)``."""
        frame = self.next()
        return frame.event, frame.data["run_id"], frame.data["workspace"]

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        self._reader.join(timeout=10)


@pytest.mark.timeout(60)
def test_the_feed_tells_members_of_workspace_runs_and_outsiders_nothing(
    users: dict[str, httpx.Client],
) -> None:
    alice, bob, carol, dave = users["alice"], users["bob"], users["carol"], users["dave"]
    with connect_sse(dave, "GET", "/runs/feed", params={"workspace": "ml"}) as es:
        assert es.response.status_code == 403
        body = json.loads(es.response.read())
        assert body["error"]["code"] == "forbidden"
    with connect_sse(alice, "GET", "/runs/feed", params={"workspace": "a b"}) as es:
        assert es.response.status_code == 422

    feeds = {
        "alice": Feed(alice),
        "bob": Feed(bob),
        "bob_ml": Feed(bob, workspace="ml"),
        "carol_ml": Feed(carol, workspace="ml"),
        "dave": Feed(dave),
        "alice_ml": Feed(alice, workspace="ml"),
    }
    try:
        personal = start(alice, "sleeper", None, seconds=300)
        shared = start(alice, "sleeper", "ml", seconds=300)
        # The owner's plain feed has both, in order; its ml feed only the shared one.
        assert feeds["alice"].change() == ("run_started", personal, None)
        assert feeds["alice"].change() == ("run_started", shared, "ml")
        # Members get the shared run and not the personal one that came first.
        for name in ("bob", "bob_ml", "carol_ml", "alice_ml"):
            assert feeds[name].change() == ("run_started", shared, "ml"), name

        assert carol.post(f"/runs/{shared}/stop").status_code == 202
        for name in ("alice", "bob", "bob_ml", "carol_ml"):
            assert feeds[name].change() == ("run_stopping", shared, "ml"), name
            assert feeds[name].change() == ("run_finished", shared, "ml"), name
        assert carol.delete(f"/runs/{shared}").status_code == 204
        for name in ("bob", "carol_ml"):
            assert feeds[name].change() == ("run_deleted", shared, "ml"), name

        # dave saw none of it: the first change on his feed is his own run's.
        own = start(dave, "echo", None)
        assert feeds["dave"].change() == ("run_started", own, None)
        assert alice.post(f"/runs/{personal}/stop").status_code == 202
    finally:
        for feed in feeds.values():
            feed.close()
