"""What a CouchStore does to its database as a whole.

The Mango indexes it creates, the ``_security`` it sets (never public, an
operator's members kept), and delete/purge leaving no chunk of a run behind.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from runyard.actors.records import Event
from tests.couch_docs import all_docs, docs_of
from tests.couch_store_fixtures import T0, Run, Stores, log_events, record
from tests.store_helpers import whole

pytestmark = [pytest.mark.couchdb, pytest.mark.timeout(60)]


def test_mango_indexes_exist(stores: Stores, http: httpx.Client, couch_db_name: str) -> None:
    stores()
    indexes = http.get(f"/{couch_db_name}/_index").json()["indexes"]
    fields = {
        idx["ddoc"]: [next(iter(f)) for f in idx["def"]["fields"]] for idx in indexes if idx["ddoc"]
    }
    assert fields == {
        "_design/runyard-by-owner": ["owner", "started_at", "run_id"],
        "_design/runyard-by-workspace": ["workspace", "started_at", "run_id"],
        "_design/runyard-by-status": ["status", "run_id"],
        "_design/runyard-by-finished": ["finished_at"],
    }
    stores()  # opening again is harmless
    assert len(http.get(f"/{couch_db_name}/_index").json()["indexes"]) == len(indexes)


def test_database_is_not_public(
    stores: Stores, run: Run[Any], http: httpx.Client, couch_url: str, couch_db_name: str
) -> None:
    run(stores().save(record("secret", "success")))
    security = http.get(f"/{couch_db_name}/_security").json()
    assert "_admin" in security["members"]["roles"]
    parts = urlsplit(couch_url)
    anonymous = f"{parts.scheme}://{parts.hostname}:{parts.port}"
    with httpx.Client(base_url=anonymous, timeout=30) as nobody:
        assert nobody.get(f"/{couch_db_name}/secret").status_code == 401
        assert nobody.get(f"/{couch_db_name}/_all_docs").status_code == 401
        assert nobody.post(f"/{couch_db_name}/_find", json={"selector": {}}).status_code == 401


def test_opening_locks_a_public_database_but_keeps_an_operators_members(
    stores: Stores, http: httpx.Client, couch_db_name: str
) -> None:
    # A public database with an admin of the operator's (CouchDB before 3 and
    # pouchdb-server create them public; a new CouchDB 3 one is locked already).
    assert http.put(f"/{couch_db_name}").status_code in (201, 202)
    public = {"admins": {"names": ["ops"], "roles": []}, "members": {"names": [], "roles": []}}
    assert http.put(f"/{couch_db_name}/_security", json=public).status_code == 200
    stores()
    security = http.get(f"/{couch_db_name}/_security").json()
    assert security["members"]["roles"] == ["_admin"]
    assert security["admins"] == {"names": ["ops"], "roles": ["_admin"]}

    # Members the operator set are theirs: opening leaves them alone.
    operators = {"admins": {"names": [], "roles": []}, "members": {"names": [], "roles": ["ops"]}}
    assert http.put(f"/{couch_db_name}/_security", json=operators).status_code == 200
    stores()
    assert http.get(f"/{couch_db_name}/_security").json() == operators


def test_delete_and_purge_remove_every_chunk(
    stores: Stores, run: Run[Any], http: httpx.Client, couch_db_name: str
) -> None:
    store = stores(chunk_bytes=8192)
    events = tuple(Event(seq=i, ts=T0 + i, type="log", data={"t": "y" * 500}) for i in range(1, 60))
    run(
        store.save_many(
            whole([record("keep", "success", events), record("gone", "success", events)])
        )
    )
    run(store.save(record("old", "success", events)))
    assert len([d for d in all_docs(http, couch_db_name) if d["_id"].startswith("gone:")]) > 3
    # An orphan chunk, as a write interrupted between its steps leaves one.
    assert http.put(f"/{couch_db_name}/gone:trace:999-999", json={"events": []}).status_code == 201

    assert run(store.delete("gone")) is True
    assert run(store.delete("gone")) is False
    assert not [d for d in all_docs(http, couch_db_name) if d["_id"].startswith("gone")]

    assert run(store.purge_older_than(T0 + 11, batch=1)) == 2
    assert [d["_id"] for d in all_docs(http, couch_db_name)] == []


def test_delete_and_purge_remove_both_layouts(
    stores: Stores, run: Run[Any], http: httpx.Client, couch_db_name: str
) -> None:
    store = stores(chunk_bytes=8192)
    small, big = log_events(2, 100), log_events(30, 500)
    for prefix in ("del", "purge"):
        run(
            store.save_many(
                whole(
                    [
                        record(f"{prefix}-small", "success", small),
                        record(f"{prefix}-big", "stopped", big),
                    ]
                )
            )
        )
    assert list(docs_of(http, couch_db_name, "del-small")) == ["del-small"]
    assert len(docs_of(http, couch_db_name, "del-big")) > 3

    for run_id in ("del-small", "del-big"):
        assert run(store.delete(run_id)) is True
        assert run(store.delete(run_id)) is False
        assert docs_of(http, couch_db_name, run_id) == {}
        assert run(store.get(run_id)) is None
    # The same ids written again after the delete start afresh.
    again = record("del-small", "running", small[:1])
    run(store.save(again))
    assert run(stores().get("del-small")) == again
    assert run(store.delete("del-small")) is True

    assert run(store.purge_older_than(T0 + 11)) == 2
    assert all_docs(http, couch_db_name) == []
