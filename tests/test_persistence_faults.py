"""The store going away must cost nothing: writes queue, retry, and all arrive.

Runs against the real CouchDB-compatible server, stopped and started again
under the running runyard server.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from runyard.web.app import create_app
from runyard.web.config import ConfigError
from tests.couchdb_server import CouchTestServer
from tests.live_server import LiveServer, make_settings
from tests.waiting import wait_until

pytestmark = [pytest.mark.couchdb, pytest.mark.server]


def stored_doc(couch: CouchTestServer, db: str, run_id: str) -> dict[str, object] | None:
    try:
        response = httpx.get(f"{couch.base_url}/{db}/{run_id}", auth=couch.auth, timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


@pytest.mark.timeout(120)
def test_while_couchdb_is_down_nothing_is_acknowledged_and_everything_arrives_after(
    tmp_path: Path, couch_server: CouchTestServer, couch_db_name: str
) -> None:
    settings = make_settings(
        tmp_path, couchdb_url=couch_server.url, couchdb_db=couch_db_name, store_timeout_s=1
    )
    with LiveServer(settings) as server, server.client() as client:
        sleepers = [
            client.post("/runs", json={"agent": "sleeper", "input_dict": {"seconds": 60}}).json()[
                "run_id"
            ]
            for _ in range(3)
        ]
        # A 202 means the run is on record already.
        assert all(stored_doc(couch_server, couch_db_name, r) for r in sleepers)

        couch_server.stop()
        try:
            # Nothing the store cannot keep is acknowledged: no new run ...
            refused = client.post("/runs", json={"agent": "echo", "input_dict": {}})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "store_unavailable"
            # ... and no stop that is not on record (it still takes effect).
            for run_id in sleepers:
                stop = client.post(f"/runs/{run_id}/stop")
                assert stop.status_code == 503, stop.text
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["detail"]["store"]["up"] is False
            # A reader sees what the store holds: the runs are still running there.
            assert client.get(f"/runs/{sleepers[0]}").json()["status"] == "running"
        finally:
            couch_server.start()

        wait_until(lambda: client.get("/readyz").status_code == 200, 30, "the store back up")
        for run_id in sleepers:
            with connect_sse(client, "GET", f"/runs/{run_id}/stream") as stream:
                frames = list(stream.iter_sse())
            assert frames[-1].event == "done"
            assert json.loads(frames[-1].data)["data"]["status"] == "stopped"
            doc = stored_doc(couch_server, couch_db_name, run_id)
            assert doc is not None
            assert doc["status"] == "stopped"


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
