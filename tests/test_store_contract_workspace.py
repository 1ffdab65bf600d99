"""The store contract for a run's ``workspace``, on both stores.

A run started in a workspace keeps it through every write (running, then
final), and a workspace's list query returns exactly the runs shared with
it, whoever owns them, in the same newest-first keyset order as a user's,
filters and cursor included; personal runs (no workspace) never appear in
it.  The ``store`` fixture is the one of ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runyard.actors.persistence_protocol import RunWrite
from runyard.persistence.store import RunStore
from tests.test_store_contract import T0, Run, ev, loop, rec, run, store

__all__ = ["loop", "run", "store"]  # the fixtures this module uses


@pytest.mark.timeout(30)
def test_workspace_round_trips_through_every_read(store: RunStore, run: Run[Any]) -> None:
    shared = dataclasses.replace(rec("r-ws", events=(ev(1),)), workspace="ml")
    personal = rec("r-own", started_at=T0 - 1)
    run(store.save(shared))
    run(store.save(personal))

    got = run(store.get("r-ws"))
    assert got is not None
    assert got.workspace == "ml"
    assert got == shared
    header = run(store.get_header("r-ws"))
    assert header is not None
    assert header.header.workspace == "ml"
    own = run(store.get("r-own"))
    assert own is not None
    assert own.workspace is None
    listed = {s.run_id: s.workspace for s in run(store.list_for_user("alice"))}
    assert listed == {"r-ws": "ml", "r-own": None}


@pytest.mark.timeout(30)
def test_workspace_survives_running_then_final_writes(store: RunStore, run: Run[Any]) -> None:
    running = dataclasses.replace(rec("r-live", status="running", events=(ev(1),)), workspace="ml")
    run(store.save_many([RunWrite.of(running)]))
    final = dataclasses.replace(
        running, status="success", finished_at=T0 + 2, updated_at=T0 + 3, events=(ev(1), ev(2))
    )
    run(store.save_many([RunWrite(dataclasses.replace(final, events=()), 2, (ev(2),))]))
    got = run(store.get("r-live"))
    assert got is not None
    assert (got.status, got.workspace, len(got.events)) == ("success", "ml", 2)
    [summary] = run(store.list_for_workspace("ml"))
    assert (summary.run_id, summary.status, summary.workspace) == ("r-live", "success", "ml")


@pytest.mark.timeout(60)
def test_list_for_workspace_pages_filters_and_leaves_out_other_runs(
    store: RunStore, run: Run[Any]
) -> None:
    runs = []
    for i in range(7):  # alternating owners in ml, same started_at for the tie-break twice
        owner = "alice" if i % 2 else "bob"
        started = T0 + (i // 2)
        agent = "echo" if i < 5 else "ticker"
        runs.append(
            dataclasses.replace(
                rec(f"m{i}", owner=owner, agent=agent, started_at=started), workspace="ml"
            )
        )
    runs.append(dataclasses.replace(rec("o1", started_at=T0 + 50), workspace="ops"))
    runs.append(rec("p1", started_at=T0 + 60))  # personal: in no workspace list
    runs.append(
        dataclasses.replace(rec("m-run", status="running", started_at=T0 + 70), workspace="ml")
    )
    run(store.save_many([RunWrite.of(r) for r in runs]))

    ml = [s.run_id for s in run(store.list_for_workspace("ml", limit=100))]
    assert ml == ["m-run", "m6", "m5", "m4", "m3", "m2", "m1", "m0"]
    assert {s.owner for s in run(store.list_for_workspace("ml", limit=100))} == {"alice", "bob"}
    assert [s.run_id for s in run(store.list_for_workspace("ops"))] == ["o1"]
    assert run(store.list_for_workspace("nobody")) == []

    # Keyset pages of 3 cover it once each, in order, across the started_at ties.
    seen: list[str] = []
    before = None
    while True:
        page = run(store.list_for_workspace("ml", limit=3, before=before))
        seen += [s.run_id for s in page]
        if len(page) < 3:
            break
        before = (page[-1].started_at, page[-1].run_id)
    assert seen == ml

    assert [s.run_id for s in run(store.list_for_workspace("ml", status="running"))] == ["m-run"]
    assert [s.run_id for s in run(store.list_for_workspace("ml", agent="ticker"))] == ["m6", "m5"]
    assert run(store.list_for_workspace("ml", limit=0)) == []
