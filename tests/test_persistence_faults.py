"""The store going away must cost nothing: writes queue, retry, and all arrive.

Runs against the real CouchDB-compatible server, stopped and started again
under the running runyard server.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.couchdb_server import CouchTestServer
from tests.live_server import LiveServer, make_settings, wait_until
from web.app import create_app
from web.config import ConfigError

pytestmark = pytest.mark.couchdb


def stored_doc(couch: CouchTestServer, db: str, run_id: str) -> dict[str, object] | None:
    try:
        response = httpx.get(f"{couch.base_url}/{db}/{run_id}", auth=couch.auth, timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


@pytest.mark.timeout(120)
def test_runs_finishing_while_couchdb_is_down_all_arrive_once_it_is_back(
    tmp_path: Path, couch_server: CouchTestServer, couch_db_name: str
) -> None:
    settings = make_settings(
        tmp_path, couchdb_url=couch_server.url, couchdb_db=couch_db_name, checkpoint_s=0.5
    )
    with LiveServer(settings) as server, server.client() as client:
        sleepers = [
            client.post("/runs", json={"agent": "sleeper", "input_dict": {"seconds": 60}}).json()[
                "run_id"
            ]
            for _ in range(5)
        ]
        wait_until(
            lambda: all(stored_doc(couch_server, couch_db_name, r) for r in sleepers),
            20,
            "the running stubs in CouchDB",
        )

        couch_server.stop()
        try:
            # The runs finish while the store is down.
            for run_id in sleepers:
                assert client.post(f"/runs/{run_id}/stop").status_code == 202
            quick = [
                client.post(
                    "/runs", json={"agent": "ticker", "input_dict": {"n": 20, "interval": 0}}
                ).json()["run_id"]
                for _ in range(5)
            ]
            for run_id in sleepers + quick:
                with connect_sse(client, "GET", f"/runs/{run_id}/stream") as stream:
                    last = list(stream.iter_sse())[-1]
                assert last.event == "done"

            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["detail"]["store"]["up"] is False
            admin = server.client("root")
            backlog = admin.get("/ops/registry").json()["persistence_backlog"]
            assert backlog >= len(sleepers + quick)
            # Reads still work from memory while the store is down.
            assert client.get(f"/runs/{quick[0]}").json()["status"] == "success"
        finally:
            couch_server.start()

        wait_until(lambda: client.get("/readyz").status_code == 200, 30, "the store back up")
        wait_until(
            lambda: admin.get("/ops/registry").json()["persistence_backlog"] == 0,
            30,
            "the backlog to drain",
        )
        for run_id in sleepers:
            doc = stored_doc(couch_server, couch_db_name, run_id)
            assert doc is not None
            assert doc["status"] == "stopped"
        for run_id in quick:
            doc = stored_doc(couch_server, couch_db_name, run_id)
            assert doc is not None
            assert doc["status"] == "success"
            assert doc["event_count"] == 21  # 20 ticks and done
        admin.close()


@pytest.mark.timeout(60)
def test_couchdb_credentials_can_come_as_separate_settings(
    tmp_path: Path, couch_server: CouchTestServer, couch_db_name: str
) -> None:
    user, password = couch_server.auth
    settings = make_settings(
        tmp_path,
        couchdb_url=couch_server.base_url,
        couchdb_db=couch_db_name,
        couchdb_user=user,
        couchdb_password=password,
    )
    with LiveServer(settings) as server, server.client() as client:
        assert client.get("/readyz").json()["detail"]["store"]["up"] is True
        run_id = client.post("/runs", json={"agent": "echo", "input_dict": {"x": 1}}).json()[
            "run_id"
        ]
        wait_until(lambda: stored_doc(couch_server, couch_db_name, run_id), 20, "the run stored")

    both = make_settings(
        tmp_path, couchdb_url=couch_server.url, couchdb_db=couch_db_name, couchdb_user=user
    )
    with pytest.raises(ConfigError, match="already carries credentials"):
        create_app(both)
