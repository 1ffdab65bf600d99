"""Chaos: ``kill -9`` under mixed load, restart, and nothing a client was told is taken back.

Several rounds against a real ``runyard serve`` on SQLite.  In each round
clients start, follow, stop, delete and read runs (:mod:`tests.chaos_load`)
until the server's process group is killed at a random (seeded) moment; a
new server starts on the same data dir and the same listening socket, and
everything every client was told in any round so far is checked against it:

- every run that got a 202 exists, except those whose delete got a 204 (404);
- every event any client received (SSE frame or GET body) is stored with the
  same seq, ts, type and data;
- a terminal state any client saw is the stored state;
- a stop that got a 202 has its ``stop_requested`` event stored;
- a run that was live at the kill ends ``error`` "interrupted..." with a final
  ``done`` numbered after every seq anyone received, and resuming its stream
  from the highest seq received gets that ``done``.

The counts are printed (``pytest -s``) for docs/performance.md.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.chaos_load import TERMINAL, Client, Ledger, client_loop, guarded, start
from tests.live_server import ServerProcess, ServerProcessFactory, bearer

pytestmark = pytest.mark.server

SEED = int(os.environ.get("CHAOS_SEED", "1107"))
"""Seeds the kill moments and every client's choices; ``CHAOS_SEED=n`` tries another."""
ROUNDS = 3
USERS = ("alice", "alice", "alice", "bob", "bob", "bob")  # one client each
ENV = {
    "RUNYARD_MAX_LIVE_RUNS_PER_USER": "100000",
    "RUNYARD_STOP_GRACE_S": "0.5",
    "RUNYARD_SHUTDOWN_GRACE_S": "1",
}


@dataclass
class Counts:
    """What one verification checked; ``lost`` must be 0."""

    acknowledged: int = 0
    deleted: int = 0
    events_received: int = 0
    terminal_seen: int = 0
    stops: int = 0
    interrupted: int = 0
    resumed_to_done: int = 0
    lost: int = 0

    def line(self) -> str:
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self))


class Drained:
    """The output of ``runyard serve``, read as it comes.

    ``ServerProcess`` pipes the child's output and reads it only at the end;
    the access log of this much load fills the 64 KiB pipe within a round,
    and a server blocked writing its log stops answering altogether.
    """

    def __init__(self, server: ServerProcess) -> None:
        assert server.proc is not None
        assert server.proc.stdout is not None
        self.server = server
        self.lines: list[bytes] = []
        self._thread = threading.Thread(
            target=self.lines.extend, args=(server.proc.stdout,), daemon=True
        )
        self._thread.start()

    def text(self, timeout: float = 10) -> str:
        """Everything it wrote, once it has exited."""
        self._thread.join(timeout)
        return b"".join(self.lines).decode(errors="replace")


def serve(factory: ServerProcessFactory, data_dir: Path, **kwargs: Any) -> Drained:
    """``runyard serve`` on ``data_dir`` with its output drained."""
    return Drained(factory(data_dir, **kwargs, **ENV))


def kill_group(server: ServerProcess) -> None:
    """``kill -9`` of the server's whole process group (it runs in a session of its own)."""
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)


def http(server: ServerProcess, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url,
        headers=bearer(user),
        timeout=httpx.Timeout(10, read=30),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
    )


async def load_round(server: ServerProcess, ledger: Ledger, round_no: int) -> str:
    """Mixed load until a seeded random moment, then ``kill -9``; says when and how close."""
    rng = random.Random(SEED * 100 + round_no)
    delay = rng.uniform(0.8, 2.5)
    clients = [
        Client(http(server, user), user, random.Random(rng.random()), ledger, round_no)
        for user in USERS
    ]
    try:
        async with anyio.create_task_group() as tg:
            for client in clients:
                # A sleeper first, so every round has a run that is surely live at the kill.
                await guarded(start(client, tg, agent=("sleeper", {"seconds": 60})))
            stopping = anyio.Event()
            for client in clients:
                tg.start_soon(client_loop, client, stopping, tg)
            await anyio.sleep(delay)
            stopping.set()
            kill_group(server)
            killed_at = time.monotonic()
            # Requests on live connections fail now.  One whose connection waits in the
            # listening socket's backlog (kept open for the restart) would wait for the
            # next server: cut it off; it was never answered, so it is only "attempted".
            tg.cancel_scope.deadline = anyio.current_time() + 2
    finally:
        for client in clients:
            await client.http.aclose()
    # How tight the test was: finishes a client saw just before the kill.
    close = sum(
        1
        for r, t in ledger.done_at.items()
        if ledger.round_of[r] == round_no and killed_at - t < 0.1
    )
    return f"killed after {delay:.2f} s; {close} run(s) seen finished in the last 100 ms"


async def resume_gets_done(
    client: httpx.AsyncClient, run_id: str, cursor: int, done_seq: int
) -> str | None:
    """Resume after ``cursor``: the frames must be ``cursor+1 .. done_seq``, ``done`` last."""
    ids: list[str] = []
    events: list[str] = []
    with anyio.fail_after(15):
        async with aconnect_sse(
            client, "GET", f"/runs/{run_id}/stream", headers={"Last-Event-ID": str(cursor)}
        ) as source:
            if source.response.status_code != 200:
                return f"resume {run_id} after {cursor}: {source.response.status_code}"
            async for sse in source.aiter_sse():
                if sse.event != "run":
                    ids.append(sse.id)
                    events.append(sse.event)
    want = [str(s) for s in range(cursor + 1, done_seq + 1)]
    if ids != want or not events or events[-1] != "done":
        return (
            f"resume {run_id} after {cursor}: got ids {ids[:5]}..{ids[-3:]} events "
            f"...{events[-3:]}, want {cursor + 1}..{done_seq} ending in done"
        )
    return None


def check_record(ledger: Ledger, run_id: str, rec: dict[str, Any], counts: Counts) -> list[str]:
    """Everything a client was told about one stored run, against the stored run."""
    failures: list[str] = []
    tag = f"{run_id} ({ledger.agent[run_id]}, round {ledger.round_of[run_id]})"
    events = rec["events"]
    by_seq = {e["seq"]: e for e in events}
    if [e["seq"] for e in events] != list(range(1, len(events) + 1)):
        failures.append(f"{tag}: stored seqs are not 1..{len(events)}")
    if rec["status"] not in TERMINAL:
        failures.append(f"{tag}: still {rec['status']!r} after the restart")
    for frame in ledger.frames.get(run_id, ()):
        stored = by_seq.get(frame.seq)
        if stored != frame.event:
            counts.lost += 1
            failures.append(
                f"{tag}: received ({frame.source}) {frame.event} but stored seq "
                f"{frame.seq} is {stored} (stored count {len(events)}, status {rec['status']})"
            )
    seen = ledger.terminal_seen.get(run_id, set())
    counts.terminal_seen += len(seen)
    if seen - {rec["status"]}:
        counts.lost += 1
        failures.append(f"{tag}: clients saw {sorted(seen)}, stored {rec['status']!r}")
    if run_id in ledger.stopped:
        counts.stops += 1
        if "stop_requested" not in {e["type"] for e in events}:
            failures.append(f"{tag}: stop got a 202 but no stop_requested event is stored")
    if rec["status"] in TERMINAL and (not events or events[-1]["type"] != "done"):
        failures.append(f"{tag}: finished {rec['status']!r} without a final done event")
    surely_live = ledger.agent[run_id] == "sleeper" and run_id not in ledger.stop_tried
    if rec["status"] == "error" or surely_live:
        failures += check_interrupted(ledger, tag, run_id, rec)
    return failures


def check_interrupted(ledger: Ledger, tag: str, run_id: str, rec: dict[str, Any]) -> list[str]:
    """No agent of the mix fails: an ``error`` run was live at a kill."""
    error = rec.get("error") or ""
    if rec["status"] != "error" or not error.startswith("interrupted"):
        return [f"{tag}: live at the kill but stored {rec['status']!r} error {error!r}"]
    done = rec["events"][-1] if rec["events"] else None
    received = ledger.max_seq(run_id)
    if done is None or done["type"] != "done" or done["data"].get("status") != "error":
        return [f"{tag}: interrupted without a final done error event (last {done})"]
    if done["seq"] <= received:
        return [f"{tag}: interrupted done has seq {done['seq']} but a client received {received}"]
    return []


async def verify(server: ServerProcess, ledger: Ledger, round_no: int) -> Counts:
    """Check everything the ledger holds against the restarted server; returns the counts."""
    counts = Counts(acknowledged=len(ledger.owner), deleted=len(ledger.deleted), events_received=0)
    failures: list[str] = list(ledger.anomalies)
    clients = {user: http(server, user) for user in set(USERS)}
    try:
        for run_id, owner in ledger.owner.items():
            counts.events_received += len(ledger.frames.get(run_id, ()))
            resp = await clients[owner].get(f"/runs/{run_id}")
            if run_id in ledger.deleted or (
                run_id in ledger.delete_tried and resp.status_code == 404
            ):
                if resp.status_code != 404:
                    failures.append(f"{run_id}: delete got a 204, GET now {resp.status_code}")
                continue
            if resp.status_code != 200:
                counts.lost += 1
                failures.append(
                    f"{run_id} ({ledger.agent[run_id]}, round {ledger.round_of[run_id]}): "
                    f"acknowledged, GET now {resp.status_code}; client saw "
                    f"{sorted(ledger.terminal_seen.get(run_id, ()))}, "
                    f"max seq {ledger.max_seq(run_id)}"
                )
                continue
            rec = resp.json()
            failures += check_record(ledger, run_id, rec, counts)
            if rec["status"] == "error":
                counts.interrupted += 1
                cursor = ledger.max_seq(run_id)
                if ledger.round_of[run_id] == round_no and cursor:
                    problem = await resume_gets_done(
                        clients[owner], run_id, cursor, rec["events"][-1]["seq"]
                    )
                    if problem:
                        failures.append(problem)
                    else:
                        counts.resumed_to_done += 1
    finally:
        for client in clients.values():
            await client.aclose()
    print(f"chaos round {round_no}: {counts.line()}")
    assert not failures, f"{len(failures)} failure(s) after round {round_no}:\n" + "\n".join(
        failures[:25]
    )
    return counts


@pytest.mark.anyio
@pytest.mark.timeout(150)
async def test_kill_9_under_load_takes_back_nothing_a_client_was_told(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    ledger = Ledger()
    running = serve(server_process, tmp_path)
    counts = Counts()
    for round_no in range(1, ROUNDS + 1):
        how = await load_round(running.server, ledger, round_no)
        print(f"chaos round {round_no}: {how}")
        running = serve(server_process, tmp_path, listener=running.server.listener)
        counts = await verify(running.server, ledger, round_no)
    print(f"chaos total ({ROUNDS} rounds): {counts.line()}")
    assert counts.lost == 0
    # The load must have exercised what is asserted (every round starts sleepers).
    assert counts.acknowledged > 0
    assert counts.events_received > 0
    assert counts.interrupted >= ROUNDS * len(USERS)
    assert counts.resumed_to_done > 0
    running.server.signal(signal.SIGTERM)
    assert running.server.wait(30) == 0, running.text()[-2000:]
