"""runyard.web.client's request verbs against a real server: typed answers, typed errors, cursors."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from runyard.web.client import (
    AlreadyFinished,
    AsyncClient,
    Client,
    ClientConfigError,
    ConnectionFailed,
    Forbidden,
    RunDetail,
    RunNotFound,
    RunStartedResponse,
    RunSummaryModel,
    StillRunning,
    StopResponse,
    Unauthorized,
    UnknownAgent,
    Unprocessable,
)
from tests.live_server import TOKENS, LiveServer

pytestmark = pytest.mark.server


@pytest.fixture
def client(live: LiveServer) -> Iterator[Client]:
    with Client(live.base_url, TOKENS["alice"]) as c:
        yield c


def finish(client: Client, run_id: str) -> str:
    """Follow the run to its ``done``; its final status."""
    events = list(client.stream(run_id))
    status: str = events[-1].data["status"]
    return status


@pytest.mark.timeout(30)
def test_start_get_stop_delete_answer_the_servers_models(client: Client) -> None:
    started = client.start("echo", {"word": "hi"})
    assert isinstance(started, RunStartedResponse)
    assert started.status == "running"
    assert finish(client, started.run_id) == "success"
    run = client.get(started.run_id)
    assert isinstance(run, RunDetail)
    assert (run.agent, run.status, run.owner) == ("echo", "success", "alice")
    assert run.result == {"word": "hi"}
    assert [e.type for e in run.events] == ["echo", "done"]

    sleeping = client.start("sleeper", {"seconds": 60}, max_duration_s=120)
    stopping = client.stop(sleeping.run_id)
    assert isinstance(stopping, StopResponse)
    assert stopping.status == "stopping"
    assert finish(client, sleeping.run_id) == "stopped"
    assert client.get(sleeping.run_id).error == "stopped by user"

    assert client.delete(started.run_id) is None
    with pytest.raises(RunNotFound) as gone:
        client.get(started.run_id)
    assert gone.value.status == 404
    assert gone.value.code == "run_not_found"
    assert started.run_id in gone.value.message


@pytest.mark.timeout(30)
def test_server_errors_become_typed_exceptions_with_code_and_message(
    client: Client, live: LiveServer
) -> None:
    with pytest.raises(UnknownAgent) as unknown:
        client.start("nope")
    assert unknown.value.code == "unknown_agent"
    assert "ticker" in unknown.value.message  # the server lists the known agents
    assert isinstance(unknown.value, Unprocessable)

    with pytest.raises(Unprocessable) as bad:
        client.start("ticker", max_duration_s=-1)
    assert bad.value.code == "validation_error"
    assert "max_duration_s" in bad.value.message

    done = client.start("echo")
    assert finish(client, done.run_id) == "success"
    with pytest.raises(AlreadyFinished) as finished:
        client.stop(done.run_id)
    assert "already finished with status 'success'" in str(finished.value)

    running = client.start("sleeper", {"seconds": 60})
    with pytest.raises(StillRunning) as still:
        client.delete(running.run_id)
    assert still.value.status == 409
    with Client(live.base_url, TOKENS["bob"]) as bob, pytest.raises(Forbidden):
        bob.get(running.run_id)
    client.stop(running.run_id)
    assert finish(client, running.run_id) == "stopped"

    with Client(live.base_url, "wrong-token") as stranger, pytest.raises(Unauthorized) as who:
        stranger.get(running.run_id)
    assert who.value.code == "unauthorized"


@pytest.mark.timeout(60)
def test_list_follows_cursors_through_every_page_once(live: LiveServer) -> None:
    # root has no other runs in this module, so the list is exactly these.
    with Client(live.base_url, TOKENS["root"]) as root:
        ids = [root.start("echo", {"i": i}).run_id for i in range(7)]
        for run_id in ids:
            assert finish(root, run_id) == "success"
        listed = list(root.list(page_size=3))
        assert all(isinstance(run, RunSummaryModel) for run in listed)
        assert sorted(run.run_id for run in listed) == sorted(ids)
        assert len(listed) == len(ids)
        first_page = root.page(limit=3)
        assert len(first_page.runs) == 3
        assert first_page.next_cursor is not None
        assert list(root.list(agent="ticker")) == []
        assert len(list(root.list(status="success", page_size=2))) == 7


@pytest.mark.timeout(30)
def test_url_and_token_come_from_the_environment(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, clean_runyard_env: None
) -> None:
    with pytest.raises(ClientConfigError, match="RUNYARD_TOKEN"):
        Client(live.base_url)
    monkeypatch.setenv("RUNYARD_URL", live.base_url + "/")
    monkeypatch.setenv("RUNYARD_TOKEN", TOKENS["alice"])
    with Client() as client:
        assert client.connection.url == live.base_url
        assert [a.name for a in client.agents()][:2] == ["chatty", "echo"]
    with pytest.raises(ClientConfigError, match="http://host:port"):
        Client("localhost:8000")


@pytest.mark.timeout(30)
def test_an_unreachable_server_is_connection_failed_naming_it() -> None:
    # Bound but not listening: connections are refused, and no one else gets the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with Client(url, "t") as client, pytest.raises(ConnectionFailed, match="cannot reach"):
            client.get("0" * 32)
    finally:
        sock.close()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_the_async_client_has_the_same_verbs(live: LiveServer) -> None:
    async with AsyncClient(live.base_url, TOKENS["bob"]) as bob:
        started = await bob.start("ticker", {"n": 3, "interval": 0})
        events = [event async for event in bob.stream(started.run_id)]
        assert [e.seq for e in events] == [1, 2, 3, 4]
        run = await bob.get(started.run_id)
        assert run.status == "success"
        assert started.run_id in [r.run_id async for r in bob.list(page_size=1)]
        with pytest.raises(AlreadyFinished):
            await bob.stop(started.run_id)
        await bob.delete(started.run_id)
        with pytest.raises(RunNotFound):
            await bob.get(started.run_id)
        code = "async def run(input_dict, ctx):\n    ctx.emit('hi', x=1)\n    return 7\n"
        coded = await bob.start_code(code, agent_name="mine")
        events = [event async for event in bob.stream(coded.run_id)]
        assert events[-1].data["status"] == "success", events[-1]
        assert (await bob.get(coded.run_id)).agent == "mine"
