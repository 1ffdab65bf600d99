"""The store contract for the rest of a run's record: ``schema_warnings``, ``ops_log``
and large ``options`` (a run-code run's code), on both stores.

``None`` and ``[]`` warnings are different answers ("not checked" and "it
matched") and must stay so; values too big for a CouchDB run doc are
spilled into field parts and read back whole.  The ``store`` fixture is the
one of ``tests/test_store_contract.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import Event
from runyard.persistence.store import RunStore
from tests.test_store_contract import Run, ev, loop, rec, run, store

__all__ = ["loop", "run", "store"]  # the fixtures this module uses

WARNINGS = [
    {"path": "/items/0/name", "message": "7 is not of type 'string'"},
    {"path": "/ü~1ß", "message": "'日本語 🚀' is too long"},
]
OPS_LOG: dict[str, Any] = {
    "llm": {"count": 3, "tokens": 900, "cost": 0.013, "duration_s": 4.25},
    "tool": {"count": 1, "duration_s": 0.2},
}


@pytest.mark.timeout(30)
def test_warnings_and_ops_log_round_trip_and_none_is_not_an_empty_list(
    store: RunStore, run: Run[Any]
) -> None:
    done = Event(seq=3, ts=1.0, type="done", data={"status": "success"})
    checked = dataclasses.replace(
        rec("r-rec", events=(ev(1), ev(2), done)), schema_warnings=WARNINGS, ops_log=OPS_LOG
    )
    matched = dataclasses.replace(rec("r-ok"), schema_warnings=[])
    unchecked = rec("r-none")
    run(store.save(checked))
    run(store.save(matched))
    run(store.save(unchecked))
    assert run(store.get("r-rec")) == checked
    got_ok, got_none = run(store.get("r-ok")), run(store.get("r-none"))
    assert got_ok is not None
    assert got_ok.schema_warnings == []
    assert got_none is not None
    assert got_none.schema_warnings is None
    assert got_none.ops_log == {}
    header = run(store.get_header("r-rec"))
    assert header is not None
    assert header.header.schema_warnings == WARNINGS
    assert header.header.ops_log == OPS_LOG


@pytest.mark.timeout(30)
def test_a_running_header_has_none_and_the_terminal_write_brings_them(
    store: RunStore, run: Run[Any]
) -> None:
    running = rec("r-live", status="running", events=(ev(1),))
    run(store.save(running))
    got = run(store.get("r-live"))
    assert got is not None
    assert (got.schema_warnings, got.ops_log) == (None, {})
    final = dataclasses.replace(
        rec("r-live", events=(ev(1), ev(2))), schema_warnings=WARNINGS, ops_log=OPS_LOG
    )
    head = dataclasses.replace(final, events=())
    run(store.save_many([RunWrite(head, 2, (ev(2),))]))
    assert run(store.get("r-live")) == final


@pytest.mark.timeout(60)
def test_large_warnings_ops_log_and_code_are_kept_whole(store: RunStore, run: Run[Any]) -> None:
    # Over a CouchDB run doc's budget (1 MB by default) each: spilled to field parts.
    code = "async def run(input_dict, ctx):\n" + "    x = 'é ✓'\n" * 90_000
    warnings = [{"path": f"/items/{i}", "message": "m" * 400 + f" {i} ✗"} for i in range(3000)]
    ops_log = {f"kind{i}": {"count": i, "tokens": i * 10} for i in range(100)}
    big = dataclasses.replace(
        rec("r-big", events=(ev(1),)),
        options={"code": code, "max_duration_s": 5},
        schema_warnings=warnings,
        ops_log=ops_log,
    )
    run(store.save(big))
    assert run(store.get("r-big")) == big
    # A later version with small values replaces the spilled ones.
    small = dataclasses.replace(
        big,
        updated_at=big.updated_at + 1,
        options={"code": "async def run(i, c):\n    return 1\n"},
        schema_warnings=[],
        ops_log={"llm": {"count": 1}},
    )
    run(store.save(small))
    assert run(store.get("r-big")) == small
