"""A store that cannot be used (at start-up or later) is a 503 with a reason, never a dead worker.

Real SQLite files and real servers: a directory where the database file
should be, a database made immutable (``chattr +i``, which stops root too)
while the server runs, a one-way purge that fails, and a SIGTERM while the
store takes no writes (``runyard serve`` must then exit 1, not 0).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pykka
import pytest

from runyard.actors.persistence_protocol import PurgeStored, StoreHealth, StoreStatus
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.sqlite_store import SQLiteStore
from tests.api_helpers import assert_error, start, wait_finished
from tests.live_server import LiveServerFactory, ServerProcessFactory
from tests.waiting import wait_until

pytestmark = pytest.mark.server

STORE_TIMEOUT_S = 1.0
# The bound a 503 must come within: the store timeout plus slack for a loaded machine.
BOUND_S = STORE_TIMEOUT_S + 2.0


def readyz(base_url: str) -> httpx.Response:
    return httpx.get(f"{base_url}/readyz", timeout=10)


def store_reason(resp: httpx.Response) -> str:
    store = resp.json()["detail"]["store"]
    assert store is not None, resp.text
    return str(store["last_error"])


def timed(call: object) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    resp = call()  # type: ignore[operator]
    return resp, time.monotonic() - began


@pytest.mark.timeout(60)
def test_a_failing_one_way_purge_does_not_stop_the_persistence_actor(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    path.mkdir()  # a directory where the database should be: nothing opens
    ref = PersistenceActor.start(SQLiteStore(path), retry_initial_s=0.01)
    try:
        ref.tell(PurgeStored(cutoff=time.time()))
        ref.tell(PurgeStored(cutoff=time.time()))
        health: StoreHealth = ref.ask(StoreStatus(), timeout=10)
        assert ref.is_alive()
        assert health.up is False
        assert "unable to open database file" in (health.last_error or "")
        path.rmdir()
        assert ref.ask(PurgeStored(cutoff=time.time()), timeout=10) == 0
        assert ref.ask(StoreStatus(), timeout=10).up is True
    finally:
        ref.stop(timeout=10)


@pytest.mark.timeout(90)
def test_a_directory_in_place_of_the_database_serves_503_until_it_is_removed(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    db = tmp_path / "runs.sqlite3"
    db.mkdir()
    proc = server_process(tmp_path, RUNYARD_STORE_TIMEOUT_S=str(STORE_TIMEOUT_S))
    with proc.client() as alice:
        ready = readyz(proc.base_url)
        assert ready.status_code == 503, ready.text
        assert "unable to open database file" in store_reason(ready)

        resp, took = timed(lambda: alice.post("/runs", json={"agent": "echo", "input_dict": {}}))
        assert_error(resp, 503, "store_unavailable")
        assert took < BOUND_S
        resp, took = timed(lambda: alice.get("/runs"))
        assert_error(resp, 503, "store_unavailable")
        assert took < BOUND_S
        assert_error(alice.get(f"/runs/{'0' * 32}"), 503, "store_unavailable")

        db.rmdir()  # fixed, no restart
        wait_until(lambda: readyz(proc.base_url).status_code == 200, 20, "/readyz 200")
        run_id = start(alice, "echo", x=1)
        assert wait_finished(alice, run_id)["status"] == "success"
        assert any(r["run_id"] == run_id for r in alice.get("/runs").json()["runs"])
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    out = proc.output()
    assert "the store is not available yet" in out


def chattr(flag: str, *paths: Path) -> bool:
    existing = [str(p) for p in paths if p.exists()]
    if shutil.which("chattr") is None or not existing:
        return False
    done = subprocess.run(["chattr", flag, *existing], capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """The files to make immutable; made mutable again after the test, whatever happens."""
    files: list[Path] = []
    try:
        yield files
    finally:
        chattr("-i", *files)


def make_read_only(data_dir: Path, files: list[Path]) -> None:
    db = data_dir / "runs.sqlite3"
    # Not the -shm file: SQLite maps it, and an immutable mapping is a SIGBUS.
    files += [db, db.with_name(db.name + "-wal")]
    if not chattr("+i", *files):
        pytest.skip("chattr +i is not available here (needs root on a filesystem that has it)")


@pytest.mark.timeout(90)
def test_a_read_only_store_is_not_ready_and_says_why(
    tmp_path: Path, live_server: LiveServerFactory, immutable: list[Path]
) -> None:
    server = live_server(data_dir=tmp_path, store_timeout_s=STORE_TIMEOUT_S)
    with server.client("alice") as alice:
        before = start(alice, "echo", x=1)
        wait_finished(alice, before)
        assert readyz(server.base_url).status_code == 200

        make_read_only(tmp_path, immutable)
        resp, took = timed(lambda: alice.post("/runs", json={"agent": "echo", "input_dict": {}}))
        assert_error(resp, 503, "store_unavailable")
        assert took < BOUND_S

        def not_ready() -> str | None:
            resp = readyz(server.base_url)
            return store_reason(resp) if resp.status_code == 503 else None

        reason = wait_until(not_ready, 20, "/readyz 503")
        assert reason.startswith("writes failing:"), reason
        assert "disk I/O error" in reason or "readonly" in reason, reason
        # Reads of what is stored still work.
        assert alice.get(f"/runs/{before}").status_code == 200

        chattr("-i", *immutable)  # fixed, no restart
        wait_until(lambda: readyz(server.base_url).status_code == 200, 20, "/readyz 200")
        after = start(alice, "echo", x=2)
        assert wait_finished(alice, after)["status"] == "success"


@pytest.mark.timeout(120)
def test_sigterm_with_acknowledged_data_the_store_cannot_take_exits_1(
    tmp_path: Path, server_process: ServerProcessFactory, immutable: list[Path]
) -> None:
    proc = server_process(
        tmp_path, RUNYARD_STORE_TIMEOUT_S=str(STORE_TIMEOUT_S), RUNYARD_SHUTDOWN_GRACE_S="0.5"
    )
    with proc.client() as alice:
        # A live run whose start and first ticks were stored and acknowledged...
        run_id = start(alice, "ticker", n=100000, interval=0.05)
        wait_until(lambda: alice.get(f"/runs/{run_id}").json()["event_count"] >= 3, 20, "ticks")
        # ...then the store stops taking writes: its later ticks and its end are lost.
        make_read_only(tmp_path, immutable)
        wait_until(lambda: readyz(proc.base_url).status_code == 503, 20, "/readyz 503")
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 1
    out = proc.output()
    assert "unsaved record(s)" in out, out
    assert run_id in out, out
    assert "could not be stored" in out, out


@pytest.mark.timeout(60)
def test_sigterm_with_everything_stored_exits_0(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    proc = server_process(tmp_path)
    with proc.client() as alice:
        wait_finished(alice, start(alice, "echo", x=1))
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert "could not be stored" not in proc.output()


def test_pykka_is_what_stops_a_failed_actor_elsewhere() -> None:
    """The guard above is ours: a plain pykka actor still stops on a failed tell."""

    class Plain(pykka.ThreadingActor):
        def on_receive(self, message: object) -> None:
            raise ValueError("boom")

    ref = Plain.start()
    ref.tell("x")
    wait_until(lambda: not ref.is_alive(), 10, "the plain actor to stop")
