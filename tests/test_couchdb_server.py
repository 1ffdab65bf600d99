"""The CouchDB-compatible test server answers like Apache CouchDB 3.

One test per patch in ``tests/couchdb/preload.js``; each fails against the
stock pouchdb-server 4.2.0 (run with ``RUNYARD_TEST_COUCHDB_NO_PRELOAD=1`` to
see that). Requests go to the running server: httpx for the raw HTTP answers,
aiocouch where the gap broke aiocouch.

Each test runs against pouchdb-server and, where ``../shared/couchdb`` is
there, against a real Apache CouchDB 3.5.0 too: what the preload claims about
CouchDB is checked on CouchDB itself. Where the two disagree, the real one is
right and the preload (or the test) is what to fix.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiocouch import CouchDB

from tests.couchdb_server import CouchTestServer

pytestmark = [pytest.mark.couchdb]


@pytest.fixture(params=["pouchdb", "couchdb"])
def couch_server(request: pytest.FixtureRequest) -> CouchTestServer:
    """pouchdb-server with the preload, then the real CouchDB (skipped where absent)."""
    name = "pouchdb_server" if request.param == "pouchdb" else "real_couch_server"
    server: CouchTestServer = request.getfixturevalue(name)
    return server


@pytest.fixture
def http(couch_server: CouchTestServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=couch_server.base_url, auth=couch_server.auth, timeout=10) as c:
        yield c


@pytest.fixture
def db(http: httpx.Client, couch_db_name: str) -> Iterator[str]:
    assert http.put(f"/{couch_db_name}").status_code == 201
    yield couch_db_name
    http.delete(f"/{couch_db_name}")


def _aiocouch(server: CouchTestServer) -> CouchDB:
    return CouchDB(server.url)  # aiohttp sends URL credentials as basic auth


def _read_lines_until(
    response: httpx.Response, done: Any, deadline_s: float
) -> tuple[list[str], float]:
    """Read a streamed answer line by line until ``done(lines)`` or its end.

    Gives up (the caller's assertion then fails) at the deadline instead of
    hanging: the stock server sends a newline every 6 s, so every read returns.
    """
    start = time.monotonic()
    lines: list[str] = []
    for line in response.iter_lines():
        lines.append(line)
        if done(lines) or time.monotonic() - start > deadline_s:
            break
    return lines, time.monotonic() - start


# 1. JSON is application/json whatever the Accept header --------------------------


@pytest.mark.timeout(30)
def test_json_answers_are_application_json_and_aiocouch_reads_them(
    couch_server: CouchTestServer, couch_db_name: str
) -> None:
    answer = httpx.get(couch_server.base_url, headers={"Accept": "*/*"}, timeout=10)
    assert answer.headers["content-type"].startswith("application/json")

    async def scenario() -> dict[str, Any]:
        async with _aiocouch(couch_server) as couch:
            database = await couch.create(couch_db_name)
            doc = await database.create("doc-1", data={"n": 1})
            await doc.save()
            again = await database.get("doc-1")
            await database.delete()
            return dict(again.data or {})

    assert asyncio.run(scenario())["n"] == 1


# 2. No compression: continuous _changes lines arrive as they happen ------------


@pytest.mark.timeout(30)
def test_no_gzip_and_continuous_changes_lines_arrive(http: httpx.Client, db: str) -> None:
    gzip = {"Accept-Encoding": "gzip, deflate"}
    assert "content-encoding" not in http.get(f"/{db}", headers=gzip).headers

    params = {"feed": "continuous", "heartbeat": 200, "since": "now"}
    with http.stream("GET", f"/{db}/_changes", params=params, headers=gzip) as feed:
        assert "content-encoding" not in feed.headers
        assert http.put(f"/{db}/live-doc", json={"x": 1}).status_code == 201
        lines, _ = _read_lines_until(feed, lambda ls: "live-doc" in ls[-1], deadline_s=8)
    assert any(line and json.loads(line).get("id") == "live-doc" for line in lines)


# 3. _bulk_docs results in request order -----------------------------------------


@pytest.mark.timeout(30)
def test_bulk_docs_results_come_in_request_order(
    couch_server: CouchTestServer, http: httpx.Client, db: str
) -> None:
    # A design doc skips the per-doc validation lookup, so the stock server
    # answered it first; ordinary docs came back in check-completion order.
    ids = [f"doc-{i:02d}" for i in range(24)]
    ids.insert(17, "_design/in-the-middle")
    answer = http.post(f"/{db}/_bulk_docs", json={"docs": [{"_id": i} for i in ids]})
    assert answer.status_code == 201
    assert [row["id"] for row in answer.json()] == ids

    async def scenario() -> list[str]:
        async with _aiocouch(couch_server) as couch:
            database = await couch[db]
            more = [f"more-{i:02d}" for i in range(20)] + ["_design/last"]
            async with database.create_docs(more) as bulk:  # asserts on the order itself
                pass
            assert bulk.response is not None
            return [row["id"] for row in bulk.response]

    assert asyncio.run(scenario())[-1] == "_design/last"


# 4. PUT /db/<id>: the URL names the document -------------------------------------


@pytest.mark.timeout(30)
def test_put_design_doc_takes_the_id_from_the_url(http: httpx.Client, db: str) -> None:
    answer = http.put(f"/{db}/_design/by-url", json={"_id": "_design/by-body", "views": {}})
    assert answer.status_code == 201
    assert answer.json()["id"] == "_design/by-url"
    assert http.get(f"/{db}/_design/by-url").status_code == 200
    assert http.get(f"/{db}/_design/by-body").status_code == 404


# 5. _find answers a bookmark that pages -----------------------------------------


@pytest.mark.timeout(30)
def test_find_bookmark_pages_through_results(
    couch_server: CouchTestServer, http: httpx.Client, db: str
) -> None:
    docs = [{"_id": f"d{i:02d}", "kind": "x", "n": i} for i in range(25)]
    docs += [{"_id": f"other{i:02d}", "kind": "y", "n": -1} for i in range(5)]
    assert http.post(f"/{db}/_bulk_docs", json={"docs": docs}).status_code == 201
    assert http.post(f"/{db}/_index", json={"index": {"fields": ["n"]}}).status_code == 200
    # Like CouchDB 3: no limit means 25.
    assert len(http.post(f"/{db}/_find", json={"selector": {}}).json()["docs"]) == 25

    query: dict[str, Any] = {"selector": {"n": {"$gte": 0}}, "sort": [{"n": "asc"}], "limit": 10}
    seen: list[int] = []
    pages: list[int] = []
    bookmark = None
    for _ in range(5):
        body = dict(query, bookmark=bookmark) if bookmark else query
        page = http.post(f"/{db}/_find", json=body).json()
        seen += [d["n"] for d in page["docs"]]
        pages.append(len(page["docs"]))
        if len(page["docs"]) < query["limit"]:
            # CouchDB 3: an empty page past the end repeats the bookmark.
            after = http.post(f"/{db}/_find", json=dict(query, bookmark=page["bookmark"]))
            assert after.json()["docs"] == []
            assert after.json()["bookmark"] == page["bookmark"]
            break
        bookmark = page["bookmark"]
    assert pages == [10, 10, 5]
    assert seen == list(range(25))
    bad = http.post(f"/{db}/_find", json=dict(query, bookmark="not-a-bookmark"))
    assert bad.status_code == 400

    async def scenario() -> list[str]:
        async with _aiocouch(couch_server) as couch:
            database = await couch[db]
            return [doc.id async for doc in database.find({"kind": "x"})]

    assert sorted(asyncio.run(scenario())) == [d["_id"] for d in docs if d["kind"] == "x"]


@pytest.mark.timeout(30)
def test_find_sorts_on_fields_missing_from_the_selector(http: httpx.Client, db: str) -> None:
    # runyard's list query: equality on the first field, sorted on all three.
    docs = [{"_id": f"s{i}", "kind": "x", "n": i % 3, "m": i} for i in range(6)]
    assert http.post(f"/{db}/_bulk_docs", json={"docs": docs}).status_code == 201
    index = {"index": {"fields": ["kind", "n", "m"]}}
    assert http.post(f"/{db}/_index", json=index).status_code == 200
    sort = [{"kind": "desc"}, {"n": "desc"}, {"m": "desc"}]
    answer = http.post(f"/{db}/_find", json={"selector": {"kind": "x"}, "sort": sort, "limit": 4})
    assert answer.status_code == 200, answer.text
    assert [(d["n"], d["m"]) for d in answer.json()["docs"]] == [(2, 5), (2, 2), (1, 4), (1, 1)]


# 10. _find / _explain / _index respect the database's _security ---------------------


@pytest.mark.timeout(30)
def test_find_respects_security(couch_server: CouchTestServer, http: httpx.Client, db: str) -> None:
    admin_only = {"names": [], "roles": ["_admin"]}
    security = {"admins": admin_only, "members": admin_only}
    assert http.put(f"/{db}/_security", json=security).status_code == 200
    assert http.put(f"/{db}/secret", json={"pin": 1234}).status_code == 201
    query = {"selector": {"pin": {"$gt": 0}}}
    assert http.post(f"/{db}/_find", json=query).json()["docs"][0]["pin"] == 1234
    with httpx.Client(base_url=couch_server.base_url, timeout=10) as anonymous:
        assert anonymous.get(f"/{db}/secret").status_code == 401
        assert anonymous.post(f"/{db}/_find", json=query).status_code == 401
        assert anonymous.post(f"/{db}/_explain", json=query).status_code == 401
        assert anonymous.get(f"/{db}/_index").status_code == 401


# 6. _changes feeds honour timeout ------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("feed", ["longpoll", "continuous"])
def test_changes_feed_ends_after_timeout(http: httpx.Client, db: str, feed: str) -> None:
    assert http.put(f"/{db}/one", json={}).status_code == 201
    params: dict[str, Any] = {"feed": feed, "timeout": 300, "since": "now"}
    with http.stream("GET", f"/{db}/_changes", params=params) as answer:
        assert answer.status_code == 200
        lines, elapsed = _read_lines_until(answer, lambda ls: "last_seq" in ls[-1], deadline_s=8)
    assert elapsed < 5
    if feed == "longpoll":  # one JSON body; CouchDB spreads it over lines
        last = json.loads("\n".join(lines))
    else:  # one JSON object a line, the last one names last_seq
        last = json.loads(next(line for line in lines if "last_seq" in line))
    # CouchDB's sequences are opaque strings ("1-g1AAA..."); the number before
    # the dash counts the updates of a single node, pouchdb answers it bare.
    assert str(last["last_seq"]).split("-", 1)[0] == "1"
    if feed == "longpoll":
        assert last["results"] == []


# 7. Errors are answers, not crashes ---------------------------------------------


@pytest.mark.timeout(30)
def test_anonymous_create_db_is_401_and_server_survives(
    couch_server: CouchTestServer, http: httpx.Client
) -> None:
    name = f"anon_{uuid.uuid4().hex[:8]}"
    try:
        answer = httpx.put(f"{couch_server.base_url}/{name}", timeout=10)
    except httpx.HTTPError as exc:  # the stock server died mid-request
        pytest.fail(f"no answer: {exc!r}")
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert http.get("/").status_code == 200
    assert http.get(f"/{name}").status_code == 404


@pytest.mark.timeout(30)
def test_missing_changes_filter_is_404_and_selector_filter_works(
    http: httpx.Client, db: str
) -> None:
    docs = [{"_id": "a", "color": "red"}, {"_id": "b", "color": "blue"}]
    assert http.post(f"/{db}/_bulk_docs", json={"docs": docs}).status_code == 201
    for feed in ("normal", "longpoll"):
        missing = http.get(f"/{db}/_changes", params={"filter": "nope/x", "feed": feed})
        assert missing.status_code == 404
        assert http.get("/").status_code == 200  # still alive
    no_selector = http.get(f"/{db}/_changes", params={"filter": "_selector"})
    assert no_selector.status_code == 400
    assert http.get("/").status_code == 200
    red = http.post(
        f"/{db}/_changes", params={"filter": "_selector"}, json={"selector": {"color": "red"}}
    )
    assert red.status_code == 200
    assert [row["id"] for row in red.json()["results"]] == ["a"]


# CouchDB 3's conflict error ------------------------------------------------------


@pytest.mark.timeout(30)
def test_conflict_error_reads_like_couchdb(http: httpx.Client, db: str) -> None:
    assert http.put(f"/{db}/c", json={"v": 1}).status_code == 201
    again = http.put(f"/{db}/c", json={"v": 2})
    assert again.status_code == 409
    expected = {"error": "conflict", "reason": "Document update conflict."}
    assert again.json() == expected
    bulk = http.post(f"/{db}/_bulk_docs", json={"docs": [{"_id": "c", "v": 3}]}).json()
    assert bulk == [{"id": "c", **expected}]


@pytest.mark.timeout(30)
def test_delete_without_rev_is_a_conflict(http: httpx.Client, db: str) -> None:
    rev = http.put(f"/{db}/d", json={}).json()["rev"]
    assert http.delete(f"/{db}/d").status_code == 409
    assert http.get(f"/{db}/d").status_code == 200
    assert http.delete(f"/{db}/d", params={"rev": rev}).status_code == 200
    assert http.get(f"/{db}/d").status_code == 404


# 8. Restart keeps what was acknowledged -----------------------------------------


@pytest.mark.timeout(60)
def test_restart_keeps_port_and_everything_acknowledged(
    couch_server: CouchTestServer, couch_db_name: str
) -> None:
    port = couch_server.port
    more = [f"{couch_db_name}_{i}" for i in range(8)]
    with httpx.Client(base_url=couch_server.base_url, auth=couch_server.auth, timeout=10) as c:
        assert c.put(f"/{couch_db_name}").status_code == 201
        assert c.put(f"/{couch_db_name}/kept", json={"v": 1}).status_code == 201
        for name in more:
            assert c.put(f"/{name}").status_code == 201
    couch_server.restart()  # at once: whatever was answered must be on disk
    assert couch_server.port == port
    with httpx.Client(base_url=couch_server.base_url, auth=couch_server.auth, timeout=10) as c:
        assert {couch_db_name, *more} <= set(c.get("/_all_dbs").json())
        assert c.get(f"/{couch_db_name}/kept").json()["v"] == 1
        for name in [couch_db_name, *more]:
            c.delete(f"/{name}")
