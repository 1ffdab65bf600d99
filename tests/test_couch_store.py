"""CouchStore behaviour the shared store contract cannot show.

Trace splitting (no document over ``chunk_bytes``, a commit adds chunks and
rewrites only the run doc), ``_rev`` races between two writers, the Mango indexes and the
database's ``_security``. Runs against the CouchDB-compatible test server
(``couch_url``); each test has its own database and its own event loop
(aiocouch binds its HTTP session to the loop that opened it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest

from actors.persistence_protocol import RunWrite
from actors.records import Event, RunRecord, RunStatus
from persistence.couch_store import CouchStore
from tests.store_helpers import whole

pytestmark = [pytest.mark.couchdb]

T = TypeVar("T")
T0 = 1_700_000_000.0


@pytest.fixture
def run() -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture
def http(couch_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=couch_url, timeout=120) as client:  # URL credentials: basic auth
        yield client


@pytest.fixture
def stores(
    couch_url: str,
    couch_db_name: str,
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    http: httpx.Client,
) -> Iterator[Callable[..., CouchStore]]:
    """Opens CouchStores on this test's database; closes them and drops it after."""
    opened: list[CouchStore] = []

    def open_store(**kwargs: Any) -> CouchStore:
        store = CouchStore(couch_url, db=couch_db_name, **kwargs)
        run(store.open())
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        run(store.close())
    http.delete(f"/{couch_db_name}")


def record(
    run_id: str,
    status: RunStatus,
    events: tuple[Event, ...] = (),
    *,
    updated_at: float = T0 + 1,
    result: Any = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        owner="alice",
        agent="echo",
        status=status,
        input={"prompt": "hi"},
        started_at=T0,
        finished_at=None if status == "running" else T0 + 10,
        events=events,
        result=result,
        error=None if status != "error" else "boom",
        updated_at=updated_at,
    )


def all_docs(http: httpx.Client, db: str) -> list[dict[str, Any]]:
    rows = http.get(f"/{db}/_all_docs", params={"include_docs": "true"}).json()["rows"]
    return [row["doc"] for row in rows if not row["id"].startswith("_design/")]


def encoded_size(doc: dict[str, Any]) -> int:
    return len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())


@pytest.mark.timeout(300)
def test_thirty_megabyte_trace_is_split_and_round_trips(
    stores: Callable[..., CouchStore],
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    http: httpx.Client,
    couch_db_name: str,
) -> None:
    store = stores()
    line = "log line ✓ 日本語 " + "x" * 3000
    events = [
        Event(seq=i, ts=T0 + i / 1000, type="log", data={"i": i, "line": line})
        for i in range(1, 10_001)
    ]
    # One event far bigger than a chunk (split into parts) and a result too big
    # for the run doc (spilled into parts).
    events[4_999] = Event(seq=5_000, ts=T0 + 5, type="blob", data={"text": "ü" * 2_500_000})
    trace = tuple(events)
    big_result = {"rows": ["r" * 100] * 20_000}

    checkpoint = record("big", "running", trace[:6_000])
    run(store.save(checkpoint))
    first_chunks = {d["_id"]: d["_rev"] for d in all_docs(http, couch_db_name) if ":e:" in d["_id"]}

    final = record("big", "success", trace, result=big_result)
    run(store.save(final))
    assert run(store.get("big")) == final
    assert run(store.list_for_user("alice"))[0].event_count == 10_000

    docs = all_docs(http, couch_db_name)
    assert sum(encoded_size(d) for d in docs) > 30_000_000
    assert max(encoded_size(d) for d in docs) <= store.chunk_bytes
    run_doc = next(d for d in docs if d["_id"] == "big")
    chunks = [d for d in docs if ":e:" in d["_id"]]
    assert "events" not in run_doc
    assert run_doc["writers"] == [[store._gen, 1]]
    assert any("part" in d for d in chunks)  # the big event's parts
    assert "result" in run_doc["spilled"]
    # The checkpoint's chunks are never rewritten: the final write added chunks
    # for the events after it, and nothing else.
    assert set(first_chunks) <= {d["_id"] for d in chunks}
    assert all(d["_rev"].startswith("1-") for d in chunks)
    assert min(d["first_seq"] for d in chunks if d["_id"] not in first_chunks) == 6_001


@pytest.mark.timeout(60)
def test_stale_writers_lose_to_the_terminal_status(
    stores: Callable[..., CouchStore], run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    events = tuple(Event(seq=i, ts=T0 + i, type="log", data={"i": i}) for i in range(1, 9))
    a, b = stores(), stores()
    run(a.save(record("r", "running", events[:2])))

    # b read the run doc while it was running (its _rev is now stale) ...
    snapshot = run(b._docs_by_id(["r"]))
    stale_read = b._docs_by_id
    reads = 0

    async def first_read_is_stale(ids: Any) -> dict[str, dict[str, Any]]:
        nonlocal reads
        reads += 1
        return snapshot if reads == 1 else await stale_read(ids)

    b._docs_by_id = first_read_is_stale  # type: ignore[method-assign]
    # ... then a finished the run ...
    final = record("r", "stopped", events[:5], updated_at=T0 + 5)
    run(a.save(final))
    # ... and b's later checkpoint, written with the stale _rev, conflicts, re-reads
    # and gives way: the terminal status and its trace stay.
    run(b.save(record("r", "running", events, updated_at=T0 + 9)))
    assert reads == 2
    assert run(a.get("r")) == final

    # The other way round: b's running write got in first, a's terminal write
    # with a stale _rev conflicts, re-reads and wins.
    run(a.save(record("s", "running", events[:1])))
    snapshot = run(a._docs_by_id(["s"]))
    run(b.save(record("s", "running", events[:6], updated_at=T0 + 6)))
    reads = 0
    stale_read = a._docs_by_id
    a._docs_by_id = first_read_is_stale  # type: ignore[method-assign]
    done = record("s", "error", events[:7], updated_at=T0 + 7)
    run(a.save(done))
    assert run(b.get("s")) == done

    # Truly concurrent: a flood of running checkpoints against one terminal write.
    async def race() -> None:
        checkpoints = [
            b.save(record("t", "running", events[:n], updated_at=T0 + n)) for n in range(1, 8)
        ]
        await asyncio.gather(
            *checkpoints[:3], a.save(record("t", "success", events)), *checkpoints[3:]
        )

    run(race())
    assert run(a.get("t")) == record("t", "success", events)


@pytest.mark.timeout(60)
def test_mango_indexes_exist(
    stores: Callable[..., CouchStore], http: httpx.Client, couch_db_name: str
) -> None:
    stores()
    indexes = http.get(f"/{couch_db_name}/_index").json()["indexes"]
    fields = {
        idx["ddoc"]: [next(iter(f)) for f in idx["def"]["fields"]] for idx in indexes if idx["ddoc"]
    }
    assert fields == {
        "_design/runyard-by-owner": ["owner", "started_at", "run_id"],
        "_design/runyard-by-status": ["status", "run_id"],
        "_design/runyard-by-finished": ["finished_at"],
    }
    stores()  # opening again is harmless
    assert len(http.get(f"/{couch_db_name}/_index").json()["indexes"]) == len(indexes)


@pytest.mark.timeout(60)
def test_database_is_not_public(
    stores: Callable[..., CouchStore],
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    http: httpx.Client,
    couch_url: str,
    couch_db_name: str,
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


@pytest.mark.timeout(60)
def test_opening_locks_a_public_database_but_keeps_an_operators_members(
    stores: Callable[..., CouchStore], http: httpx.Client, couch_db_name: str
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


@pytest.mark.timeout(60)
def test_delete_and_purge_remove_every_chunk(
    stores: Callable[..., CouchStore],
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    http: httpx.Client,
    couch_db_name: str,
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


@pytest.mark.timeout(60)
def test_unencodable_text_does_not_break_the_write(
    stores: Callable[..., CouchStore], run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    store = stores()
    lone = "\ud800"  # a lone surrogate: valid in a Python str, not in UTF-8
    bad = record("odd", "error", (Event(seq=1, ts=T0, type="log", data={"s": lone}),))
    run(store.save(bad))
    got = run(store.get("odd"))
    assert got is not None
    assert got.status == "error"
    assert got.events[0].data == {"s": "?"}


def docs_of(http: httpx.Client, db: str, run_id: str) -> dict[str, dict[str, Any]]:
    """The live documents of one run (its run doc, chunks and parts), by id."""
    params = {
        "include_docs": "true",
        "startkey": json.dumps(run_id),
        "endkey": json.dumps(f"{run_id}:\ufff0"),
    }
    rows = http.get(f"/{db}/_all_docs", params=params).json()["rows"]
    return {row["id"]: row["doc"] for row in rows}


def log_events(n: int, size: int = 500) -> tuple[Event, ...]:
    return tuple(
        Event(seq=i, ts=T0 + i / 100, type="log", data={"i": i, "t": "ü" * size})
        for i in range(1, n + 1)
    )


@pytest.mark.timeout(60)
def test_small_trace_is_one_document_and_round_trips(
    stores: Callable[..., CouchStore],
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    http: httpx.Client,
    couch_db_name: str,
) -> None:
    store = stores()
    events = (
        *log_events(10, 20),
        Event(seq=11, ts=T0 + 1, type="done ✓", data={"nested": {"a": [1, 2.5, None]}}),
    )
    final = record("small", "success", events, result={"ok": True})
    run(store.save(final))
    docs = docs_of(http, couch_db_name, "small")
    assert list(docs) == ["small"]
    assert len(docs["small"]["events"]) == 11
    assert "trace" not in docs["small"]
    assert run(store.get("small")) == final
    assert run(stores().get("small")) == final  # a store that never wrote it


@pytest.mark.timeout(60)
def test_a_batch_of_new_small_runs_is_one_request(
    stores: Callable[..., CouchStore], run: Callable[[Coroutine[Any, Any, Any]], Any]
) -> None:
    store = stores()
    database = store._database()
    calls: list[str] = []
    for name in ("_bulk_docs", "_find"):
        original = getattr(database, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kw)

        setattr(database, name, counted)
    post = database.all_docs.post

    def counted_post(*args: Any, **kw: Any) -> Any:
        calls.append("_all_docs")
        return post(*args, **kw)

    database.all_docs.post = counted_post
    records = [record(f"n-{i:03d}", "success", log_events(11, 10)) for i in range(50)]
    run(store.save_many(whole(records)))
    assert calls == ["_bulk_docs"]
    # Their stale checkpoints arriving afterwards cost nothing at all.
    run(
        store.save_many(
            whole([record(f"n-{i:03d}", "running", log_events(5, 10)) for i in range(50)])
        )
    )
    assert calls == ["_bulk_docs"]
    assert [run(store.get(r.run_id)) for r in records[:3]] == records[:3]


@pytest.mark.timeout(120)
def test_a_live_runs_commit_rewrites_its_run_doc_and_adds_chunks_only(
    stores: Callable[..., CouchStore],
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    http: httpx.Client,
    couch_db_name: str,
) -> None:
    # 8 KiB documents: ~7 KB of events per chunk.
    store = stores(chunk_bytes=8192)
    events = log_events(60, 500)
    header = record("live", "running")
    run(store.save_many([RunWrite(header, 0)]))
    done = 0
    for n in (1, 3, 4, 9, 10, 25, 26, 40, 59):
        before = docs_of(http, couch_db_name, "live")
        write = RunWrite(replace(header, updated_at=T0 + n), n, events[done:n])
        run(store.save_many([write]))
        after = docs_of(http, couch_db_name, "live")
        assert {i for i in before if after[i]["_rev"] != before[i]["_rev"]} == {"live"}
        added = [after[i] for i in set(after) - set(before)]
        assert sorted(e[0] for d in added for e in d["events"]) == list(range(done + 1, n + 1))
        assert after["live"]["event_count"] == n
        assert max(encoded_size(d) for d in after.values()) <= store.chunk_bytes
        assert run(stores().get("live")) == record("live", "running", events[:n], updated_at=T0 + n)
        done = n
    final = replace(header, status="success", finished_at=T0 + 99, updated_at=T0 + 99)
    run(store.save_many([RunWrite(final, 60, events[59:])]))
    for reader in (store, stores()):
        got = run(reader.get("live"))
        assert got == replace(final, events=events)
        assert run(reader.get_events("live", 57, 10)) == list(events[57:])


@pytest.mark.timeout(60)
def test_delete_and_purge_remove_both_layouts(
    stores: Callable[..., CouchStore],
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    http: httpx.Client,
    couch_db_name: str,
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


@pytest.mark.timeout(60)
def test_stale_running_writes_after_a_terminal_one_change_nothing(
    stores: Callable[..., CouchStore],
    run: Callable[[Coroutine[Any, Any, Any]], Any],
    http: httpx.Client,
    couch_db_name: str,
) -> None:
    writer = stores(chunk_bytes=8192)
    small, big = log_events(3, 100), log_events(40, 500)
    finals = [
        record("s", "success", small, updated_at=T0 + 5),
        record("b", "stopped", big, updated_at=T0 + 5),
    ]
    run(writer.save_many(whole(finals)))
    before = {d["_id"]: d["_rev"] for d in all_docs(http, couch_db_name)}
    stale = [
        record(run_id, "running", events, updated_at=T0 + 50)
        for run_id, events in (("s", big), ("b", big + log_events(41)[40:]), ("s", small[:1]))
    ]
    # Through the store that knows the runs finished, and through one that must read.
    for store in (writer, stores(chunk_bytes=8192)):
        for stale_record in stale:
            run(store.save(stale_record))
        run(store.save_many(whole(stale)))
        assert {d["_id"]: d["_rev"] for d in all_docs(http, couch_db_name)} == before
        assert [run(store.get(r.run_id)) for r in finals] == finals

    # Between two running versions, a stale one never shrinks the stored trace.
    run(writer.save(record("r", "running", big[:20], updated_at=T0 + 20)))
    run(stores(chunk_bytes=8192).save(record("r", "running", big[:2], updated_at=T0 + 30)))
    run(writer.save(record("r", "running", big[:1], updated_at=T0 + 40)))
    assert run(stores().get("r")) == record("r", "running", big[:20], updated_at=T0 + 20)
