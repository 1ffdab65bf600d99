"""Fixtures and record builders for the CouchStore tests (a ``pytest_plugins`` module).

- ``run``: runs a coroutine to completion on this test's own event loop
  (aiocouch binds its HTTP session to the loop that opened it, so a store
  must be driven from one loop for its whole life).
- ``http``: a plain HTTP client on the test server's admin URL, to look at
  the documents a store wrote behind its back.
- ``stores``: opens CouchStores (keyword arguments go to :class:`CouchStore`)
  on this test's database; closes them and drops the database after.

``tests/couch_docs.py`` reads the database as CouchDB holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from runyard.actors.records import Event, RunRecord, RunStatus
from runyard.persistence.couch_store import CouchStore

T = TypeVar("T")
T0 = 1_700_000_000.0
Run = Callable[[Coroutine[Any, Any, T]], T]
Stores = Callable[..., CouchStore]


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture
def http(couch_url: str) -> Iterator[httpx.Client]:
    # Generous: the 30 MB trace test reads every document back in one request.
    with httpx.Client(base_url=couch_url, timeout=120) as client:  # URL credentials: basic auth
        yield client


@pytest.fixture
def stores(
    couch_url: str, couch_db_name: str, run: Run[Any], http: httpx.Client
) -> Iterator[Stores]:
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
    """A run of alice's in ``status``; a finished one ended at ``T0 + 10``."""
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


def log_events(n: int, size: int = 500) -> tuple[Event, ...]:
    """Events 1..n, each carrying ``size`` two-byte characters (UTF-8)."""
    return tuple(
        Event(seq=i, ts=T0 + i / 100, type="log", data={"i": i, "t": "ü" * size})
        for i in range(1, n + 1)
    )
