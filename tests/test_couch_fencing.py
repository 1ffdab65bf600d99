"""Fencing on a real CouchDB: once a node's runs are fenced, nothing it still
writes lands, and the new owner's ``done`` follows every stored event."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import replaces
from tests.couch_store_fixtures import T0, Run, Stores, log_events, record

pytestmark = [pytest.mark.couchdb, pytest.mark.timeout(60)]


def on_node(write_record: Any, node: str) -> Any:
    return dataclasses.replace(write_record, node=node)


def test_a_fenced_run_refuses_every_later_write_of_its_old_owner(
    stores: Stores, run: Run[Any]
) -> None:
    events = log_events(9, 50)
    old, new = stores(), stores()
    run(old.save(on_node(record("r", "running", events[:3]), "a")))
    run(old.save(on_node(record("other", "running", events[:1]), "b")))

    [fenced] = run(new.fence_unfinished("a"))
    assert (fenced.run_id, fenced.header.epoch, fenced.event_count) == ("r", 1, 3)

    # The old owner woke up: a running checkpoint with more events, then a
    # terminal write; both lose (lower epoch), whatever their status.
    run(old.save(on_node(record("r", "running", events[:6], updated_at=T0 + 6), "a")))
    run(old.save(on_node(record("r", "success", events, updated_at=T0 + 9), "a")))
    stored = run(new.get("r"))
    assert stored is not None
    assert (stored.status, len(stored.events), stored.epoch) == ("running", 3, 1)

    # The new owner ends it: its done is seq 4, right after what was stored.
    run(new.save_many([fenced.interrupted("interrupted: node a stopped", T0 + 20)]))
    ended = run(old.get("r"))
    assert ended is not None
    assert (ended.status, ended.epoch) == ("error", 1)
    assert [e.seq for e in ended.events] == [1, 2, 3, 4]
    assert ended.events[-1].type == "done"
    # The other node's run was not touched.
    other = run(new.get("other"))
    assert other is not None
    assert (other.status, other.epoch) == ("running", 0)


def test_a_write_racing_the_fence_is_kept_before_the_new_owners_done(
    stores: Stores, run: Run[Any]
) -> None:
    events = log_events(8, 50)
    old, new = stores(), stores()
    run(old.save(on_node(record("r", "running", events[:2]), "a")))
    fresh_read = new._docs_by_id
    reads = 0

    async def old_owner_writes_after_the_read(ids: Any) -> dict[str, dict[str, Any]]:
        # The fence's first read, then a write of the old owner lands before
        # the fence's own write: the fence conflicts, reads again, raises again.
        nonlocal reads
        reads += 1
        found = await fresh_read(ids)
        if reads == 2:
            await old.save(on_node(record("r", "running", events[:5], updated_at=T0 + 5), "a"))
        return found

    new._docs_by_id = old_owner_writes_after_the_read  # type: ignore[method-assign]
    [fenced] = run(new.fence_unfinished("a"))
    assert reads >= 4  # find, fence (conflict), fence again, find again
    assert (fenced.header.epoch, fenced.event_count) == (1, 5)
    run(new.save_many([fenced.interrupted("interrupted", T0 + 20)]))
    ended = run(new.get("r"))
    assert ended is not None
    assert [e.seq for e in ended.events] == [1, 2, 3, 4, 5, 6]


def test_the_epoch_decides_before_the_status() -> None:
    header = record("r", "running")
    running_new = RunWrite(dataclasses.replace(header, epoch=2), 1)
    finished_old = RunWrite(dataclasses.replace(record("r", "success"), epoch=1), 9)
    assert replaces(running_new.version, finished_old.version)
    assert not replaces(finished_old.version, running_new.version)
    assert replaces((0, "running", 1, T0), (0, None, 0, 0.0))
