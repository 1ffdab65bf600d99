"""The chaos test's clients: mixed load on a live server, recording everything they were told.

Each client starts runs (``ticker``, ``chatty``, ``echo``, ``sleeper``),
follows some of them live over SSE (some with a cut and a ``Last-Event-ID``
resume), stops some, deletes some finished ones and reads some.  Nothing is
asserted here while the server may die at any instant: the :class:`Ledger`
keeps what the server *acknowledged* (202 starts and stops, 204 deletes,
every frame and every ``GET`` body) and what was only *attempted* (a
request whose answer never came may still have taken effect, even after the
restart: its bytes can wait in the listening socket's backlog).  The test
checks the ledger against the store after the restart.

Randomness is only in timing and choices, from a seeded ``random.Random``
per client; what is asserted does not depend on it.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from httpx_sse import aconnect_sse

TERMINAL = {"success", "error", "stopped"}


@dataclass(frozen=True)
class Frame:
    """One trace event a client received: over SSE (``source="sse"``) or in a GET body."""

    seq: int
    type: str
    event: dict[str, Any]  # {"seq", "ts", "type", "data"} exactly as received
    source: str


@dataclass
class Ledger:
    """What every client was told, across all rounds (run ids are unique)."""

    owner: dict[str, str] = field(default_factory=dict)
    """Acknowledged runs (202 to ``POST /runs``) -> their owner."""
    agent: dict[str, str] = field(default_factory=dict)
    round_of: dict[str, int] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    """Runs whose stop got a 202."""
    stop_tried: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    """Runs whose delete got a 204."""
    delete_tried: set[str] = field(default_factory=set)
    frames: dict[str, list[Frame]] = field(default_factory=lambda: defaultdict(list))
    terminal_seen: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Run -> every terminal status a client saw (a ``done`` frame or a GET)."""
    anomalies: list[str] = field(default_factory=list)
    """Answers that were wrong while the server was up (checked after the round)."""
    done_at: dict[str, float] = field(default_factory=dict)
    """Run -> when (``time.monotonic()``) a client first saw it finished."""

    def received(self, run_id: str, frame: Frame) -> None:
        self.frames[run_id].append(frame)

    def max_seq(self, run_id: str) -> int:
        return max((f.seq for f in self.frames.get(run_id, ())), default=0)

    def event_count(self) -> int:
        return sum(len(v) for v in self.frames.values())


@dataclass
class Client:
    """One simulated user session: an HTTP client, its rng and its own runs."""

    http: httpx.AsyncClient
    user: str
    rng: random.Random
    ledger: Ledger
    round_no: int
    live: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


def run_input(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A run of the mix: long tickers (live at the kill), bursts, instant runs, sleepers."""
    pick = rng.random()
    if pick < 0.35:
        return "ticker", {"n": rng.randint(20, 200), "interval": rng.choice([0.005, 0.01, 0.02])}
    if pick < 0.55:
        return "chatty", {"n": rng.randint(50, 800), "batch": 25}
    if pick < 0.85:
        return "echo", {"k": rng.randint(0, 10**6)}
    return "sleeper", {"seconds": 60}


def parse_frame(ledger: Ledger, run_id: str, sse: Any) -> str | None:
    """Record one SSE frame; the terminal status it announces, if it is a ``done``."""
    if sse.event == "run":
        return None
    data = json.loads(sse.data)
    if isinstance(data, dict) and {"seq", "ts", "type", "data"} <= data.keys():
        frame = Frame(int(data["seq"]), str(data["type"]), data, "sse")
        if sse.id != str(frame.seq) or sse.event != frame.type:
            ledger.anomalies.append(
                f"{run_id}: frame id {sse.id!r} event {sse.event!r} carries {data!r}"
            )
        ledger.received(run_id, frame)
        body = data["data"]
    else:
        body = data  # a control frame (a `done` without a seq, `lagged`, `closing`)
        if sse.event != "done":
            ledger.anomalies.append(f"{run_id}: unexpected control frame {sse.event}: {data!r}")
    if sse.event == "done":
        status = str(body.get("status"))
        ledger.terminal_seen[run_id].add(status)
        ledger.done_at.setdefault(run_id, time.monotonic())
        return status
    return None


async def follow(client: Client, run_id: str) -> None:
    """Follow a run live; sometimes cut the stream and resume with ``Last-Event-ID``."""
    ledger = client.ledger
    cut_after = client.rng.choice([None, None, 3, 10])
    cursor = 0
    while True:
        headers = {"Last-Event-ID": str(cursor)} if cursor else {}
        count = 0
        async with aconnect_sse(
            client.http, "GET", f"/runs/{run_id}/stream", headers=headers
        ) as source:
            if source.response.status_code != 200:
                ledger.anomalies.append(f"{run_id}: stream {source.response.status_code}")
                return
            async for sse in source.aiter_sse():
                status = parse_frame(ledger, run_id, sse)
                if sse.event not in ("run", "done") and ledger.frames[run_id]:
                    seq = ledger.frames[run_id][-1].seq
                    if count == 0 and cursor and seq != cursor + 1:
                        ledger.anomalies.append(
                            f"{run_id}: resumed after {cursor}, first seq was {seq}"
                        )
                    cursor, count = seq, count + 1
                if status is not None:
                    client.finished.append(run_id)
                    return
                if cut_after is not None and count >= cut_after:
                    break
            else:
                ledger.anomalies.append(f"{run_id}: stream ended without done")
                return
        cut_after = None  # one cut per follower, then to the end


async def guarded(coro: Any) -> None:
    """Run one client action; a transport error (the server died) ends it quietly."""
    try:
        await coro
    except (httpx.TransportError, anyio.EndOfStream, anyio.BrokenResourceError):
        return


async def start(
    client: Client, tg: anyio.abc.TaskGroup, agent: tuple[str, dict[str, Any]] | None = None
) -> None:
    """Start a run (``agent``: name and input, else one of the mix); follow it sometimes."""
    name, input_dict = agent or run_input(client.rng)
    resp = await client.http.post("/runs", json={"agent": name, "input_dict": input_dict})
    if resp.status_code != 202:
        client.ledger.anomalies.append(f"POST /runs {name}: {resp.status_code} {resp.text}")
        return
    run_id = resp.json()["run_id"]
    ledger = client.ledger
    ledger.owner[run_id] = client.user
    ledger.agent[run_id] = name
    ledger.round_of[run_id] = client.round_no
    client.live.append(run_id)
    if name == "sleeper" or client.rng.random() < 0.6:
        tg.start_soon(guarded, follow(client, run_id))


async def stop(client: Client) -> None:
    tried = client.ledger.stop_tried | client.ledger.delete_tried
    candidates = [r for r in client.live if r not in tried]
    if not candidates:
        return
    run_id = client.rng.choice(candidates)
    client.ledger.stop_tried.add(run_id)
    resp = await client.http.post(f"/runs/{run_id}/stop")
    if resp.status_code == 202:
        client.ledger.stopped.add(run_id)
    elif resp.status_code != 409:  # 409: it had finished already
        client.ledger.anomalies.append(f"stop {run_id}: {resp.status_code} {resp.text}")


async def delete(client: Client) -> None:
    candidates = [r for r in client.finished if r not in client.ledger.delete_tried]
    if not candidates:
        return
    run_id = client.rng.choice(candidates)
    client.ledger.delete_tried.add(run_id)
    resp = await client.http.delete(f"/runs/{run_id}")
    if resp.status_code == 204:
        client.ledger.deleted.add(run_id)
    else:
        client.ledger.anomalies.append(f"delete {run_id}: {resp.status_code} {resp.text}")


async def read(client: Client) -> None:
    candidates = [r for r in client.live + client.finished if r not in client.ledger.delete_tried]
    if not candidates:
        return
    run_id = client.rng.choice(candidates)
    resp = await client.http.get(f"/runs/{run_id}")
    if resp.status_code != 200:
        client.ledger.anomalies.append(f"GET {run_id}: {resp.status_code} {resp.text}")
        return
    record = resp.json()
    for event in record["events"]:
        client.ledger.received(run_id, Frame(event["seq"], event["type"], event, "get"))
    if record["status"] in TERMINAL:
        client.ledger.terminal_seen[run_id].add(record["status"])
        client.ledger.done_at.setdefault(run_id, time.monotonic())
        if run_id not in client.finished:
            client.finished.append(run_id)


async def client_loop(client: Client, stopping: anyio.Event, tg: anyio.abc.TaskGroup) -> None:
    """Actions at random until ``stopping`` is set (or the server dies under a request)."""
    while not stopping.is_set():
        pick = client.rng.random()
        if pick < 0.5:
            action = start(client, tg)
        elif pick < 0.6:
            action = stop(client)
        elif pick < 0.7:
            action = delete(client)
        else:
            action = read(client)
        try:
            await action
        except (httpx.TransportError, anyio.EndOfStream, anyio.BrokenResourceError):
            return
        await anyio.sleep(client.rng.uniform(0.002, 0.02))
