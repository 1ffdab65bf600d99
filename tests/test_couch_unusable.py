"""CouchDB that cannot be used: refused at start-up when only the operator can fix it,
served with 503 and a reason (then recovered without a restart) otherwise.

Against real Apache CouchDB 3.5 servers of their own (``RealCouchServer``):
one whose port is closed until the test starts it, one frozen with SIGSTOP
and thawed with SIGCONT.  The wrong-credentials test logs in once as a
throwaway user made for it, never as the admin: CouchDB locks out a user
after a few failed logins, for every client of the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import assert_error, start, wait_finished
from tests.couchdb_server import free_port
from tests.live_server import LiveServerFactory, ServerProcessFactory
from tests.real_couchdb import RealCouchServer, launcher_present
from tests.waiting import wait_until

pytestmark = [pytest.mark.couchdb, pytest.mark.server]

needs_real = pytest.mark.skipif(
    not launcher_present(), reason="needs the real CouchDB launcher (../shared/couchdb)"
)

STORE_TIMEOUT_S = 1.0
BOUND_S = STORE_TIMEOUT_S + 2.0


def serve_once(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``runyard serve`` that is expected to refuse to start: its exit and output."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("RUNYARD_")}
    return subprocess.run(
        [sys.executable, "-m", "runyard.web.cli", "serve", "--port", "0"],
        env={**clean, "RUNYARD_DATA_DIR": str(tmp_path), "RUNYARD_TOKENS": "a:b", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def readyz(base_url: str) -> httpx.Response:
    return httpx.get(f"{base_url}/readyz", timeout=15)


@pytest.mark.timeout(60)
def test_an_invalid_database_name_is_refused_at_start_naming_the_setting(tmp_path: Path) -> None:
    done = serve_once(
        {"RUNYARD_COUCHDB_URL": "http://127.0.0.1:9", "RUNYARD_COUCHDB_DB": "Runs!"}, tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert "RUNYARD_COUCHDB_DB" in done.stderr
    assert "'Runs!'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def throwaway_user(real_couch_server: RealCouchServer) -> Iterator[str]:
    """A non-admin CouchDB user made for one test (a lockout then hits only it)."""
    name = f"ry_{uuid.uuid4().hex[:10]}"
    doc_url = f"{real_couch_server.base_url}/_users/org.couchdb.user:{name}"
    auth = real_couch_server.auth
    made = httpx.put(
        doc_url,
        json={"name": name, "password": "right-password", "roles": [], "type": "user"},
        auth=auth,
        timeout=30,
    )
    assert made.status_code in (201, 202), made.text
    try:
        yield name
    finally:
        rev = httpx.get(doc_url, auth=auth, timeout=30).json().get("_rev")
        if rev:
            httpx.delete(doc_url, params={"rev": rev}, auth=auth, timeout=30)


@needs_real
@pytest.mark.timeout(60)
def test_wrong_credentials_are_refused_at_start_once_naming_the_user_not_the_password(
    tmp_path: Path, real_couch_server: RealCouchServer, throwaway_user: str
) -> None:
    done = serve_once(
        {
            "RUNYARD_COUCHDB_URL": real_couch_server.base_url,
            "RUNYARD_COUCHDB_USER": throwaway_user,
            "RUNYARD_COUCHDB_PASSWORD": "wrong-password-123",
        },
        tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "RUNYARD_COUCHDB_USER" in done.stderr
    assert "RUNYARD_COUCHDB_URL" in done.stderr
    assert repr(throwaway_user) in done.stderr
    assert "401" in done.stderr
    assert "wrong-password-123" not in done.stderr + done.stdout
    # One failed login, not a loop: the right password still works (no lockout).
    ok = httpx.get(
        f"{real_couch_server.base_url}/_session",
        auth=(throwaway_user, "right-password"),
        timeout=30,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["userCtx"]["name"] == throwaway_user


@pytest.fixture
def own_couch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCouchServer]:
    """A real CouchDB of the test's own on a known port, not started yet."""
    if not launcher_present():
        pytest.skip("needs the real CouchDB launcher (../shared/couchdb)")
    server = RealCouchServer(tmp_path_factory.mktemp("own-couch"), port=free_port())
    try:
        yield server
    finally:
        pid = couch_pid(server)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # a frozen server would not stop
        server.stop()


def couch_pid(server: RealCouchServer) -> int | None:
    try:
        return int((server.data_dir / "couchdb.pid").read_text().strip())
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(180)
def test_a_closed_couchdb_port_at_start_serves_503_until_couchdb_starts(
    tmp_path: Path, server_process: ServerProcessFactory, own_couch: RealCouchServer
) -> None:
    proc = server_process(
        tmp_path,
        RUNYARD_COUCHDB_URL=own_couch.url,
        RUNYARD_STORE_TIMEOUT_S=str(STORE_TIMEOUT_S),
    )
    with proc.client() as alice:
        ready = readyz(proc.base_url)
        assert ready.status_code == 503, ready.text
        assert ready.json()["detail"]["store"]["last_error"], ready.text
        began = time.monotonic()
        resp = alice.post("/runs", json={"agent": "echo", "input_dict": {}})
        assert_error(resp, 503, "store_unavailable")
        assert_error(alice.get("/runs"), 503, "store_unavailable")
        assert time.monotonic() - began < 2 * BOUND_S

        own_couch.start()  # fixed, no restart of runyard
        wait_until(lambda: readyz(proc.base_url).status_code == 200, 60, "/readyz 200")
        run_id = start(alice, "echo", x=1)
        assert wait_finished(alice, run_id)["status"] == "success"
        assert alice.get("/runs").status_code == 200
    proc.signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert "the store is not available yet" in proc.output()


@pytest.mark.timeout(180)
def test_a_frozen_couchdb_answers_503_within_the_bound_then_recovers(
    live_server: LiveServerFactory, own_couch: RealCouchServer
) -> None:
    own_couch.start()
    server = live_server(
        couchdb_url=own_couch.url, couchdb_db="frozen_test", store_timeout_s=STORE_TIMEOUT_S
    )
    with server.client("alice") as alice:
        stored = start(alice, "echo", x=1)
        wait_finished(alice, stored)
        assert readyz(server.base_url).status_code == 200
        pid = couch_pid(own_couch)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            for call in (
                lambda: alice.post("/runs", json={"agent": "echo", "input_dict": {}}),
                lambda: alice.get("/runs"),  # behind the stuck write
                lambda: alice.get(f"/runs/{'0' * 32}"),
            ):
                began = time.monotonic()
                resp = call()
                took = time.monotonic() - began
                assert_error(resp, 503, "store_unavailable")
                assert took < BOUND_S, took
            began = time.monotonic()
            ready = readyz(server.base_url)
            assert ready.status_code == 503, ready.text
            assert time.monotonic() - began < BOUND_S
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: readyz(server.base_url).status_code == 200, 60, "/readyz 200")
        assert alice.get("/runs").status_code == 200
        again = start(alice, "echo", x=2)
        assert wait_finished(alice, again)["status"] == "success"
