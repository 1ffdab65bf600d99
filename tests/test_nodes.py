"""Nodes: a stable id per data dir, runs that record their node, reconciliation
that touches only this node's runs, and SQLite refusing a second process."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runyard.actors import DeleteRun, Runtime, StillRunning, StopRun
from runyard.actors.asyncio_actor import ask
from runyard.actors.persistence_protocol import LoadRun
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.sqlite_store import SQLiteStore
from runyard.web.config import ConfigError, Settings, load_settings
from runyard.web.node import node_id
from tests.live_server import TOKENS_ENV, ServerProcessFactory
from tests.runtime_helpers import ALICE, config, run_to_end
from tests.store_helpers import rec, whole

T0 = 1_700_000_000.0


@pytest.mark.timeout(10)
def test_the_node_id_is_made_once_per_data_dir_and_kept_private(tmp_path: Path) -> None:
    first = node_id(Settings(data_dir=tmp_path))
    assert first.startswith("node-")
    assert node_id(Settings(data_dir=tmp_path)) == first
    assert stat.S_IMODE(os.stat(tmp_path / "node_id").st_mode) == 0o600
    assert node_id(Settings(data_dir=tmp_path / "other")) != first
    assert node_id(Settings(data_dir=tmp_path, node_id="eu-1")) == "eu-1"


@pytest.mark.timeout(10)
def test_a_bad_node_id_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNYARD_NODE_ID", "no spaces/please")
    with pytest.raises(ConfigError, match="RUNYARD_NODE_ID"):
        load_settings()


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_start_up_reconciles_only_this_nodes_runs(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    mine = dataclasses.replace(rec("mine", status="running", events=3), node="a")
    theirs = dataclasses.replace(rec("theirs", status="running", events=3), node="b")
    legacy = rec("legacy", status="running", events=1)  # written before nodes existed
    await store.save_many(whole([mine, theirs, legacy]))
    await store.close()

    persistence = PersistenceActor.start(SQLiteStore(path))
    runtime = Runtime(config(node_id="a"), persistence=persistence)
    await runtime.start()
    try:
        assert sorted(runtime.recovered) == ["legacy", "mine"]
        loaded = {r: await ask(persistence, LoadRun(r), timeout=5) for r in ("mine", "theirs")}
        assert loaded["mine"].status == "error"
        assert loaded["mine"].error == "interrupted: node a stopped before the run finished"
        assert [e.seq for e in loaded["mine"].events] == [1, 2, 3, 4]  # + the closing done
        assert loaded["theirs"].status == "running"  # node b's: not ours to touch
        assert len(loaded["theirs"].events) == 3
        # Node b's live run is b's to stop or delete: refused here, and left alone.
        with pytest.raises(StillRunning, match="node b"):
            await runtime.ask(StopRun(ALICE, "theirs"), timeout=5)
        with pytest.raises(StillRunning):
            await runtime.ask(DeleteRun(ALICE, "theirs"), timeout=5)
        still = await ask(persistence, LoadRun("theirs"), timeout=5)
        assert still is not None
        assert still.status == "running"
        # A run started here records its node.
        record, _ = await run_to_end(runtime, ALICE, "echo", {"x": 1})
        assert record.node == "a"
    finally:
        await runtime.shutdown(grace_s=0.1)


@pytest.mark.server
@pytest.mark.timeout(60)
def test_a_second_process_on_the_same_sqlite_data_dir_is_refused(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    first = server_process(tmp_path)
    env = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith("RUNYARD_")},
        "RUNYARD_DATA_DIR": str(tmp_path),
        "RUNYARD_TOKENS": TOKENS_ENV,
        "RUNYARD_PORT": "0",
    }
    second = subprocess.run(
        [sys.executable, "-m", "runyard.web.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 2, second.stderr
    assert "RUNYARD_DATA_DIR" in second.stderr
    assert "single-node" in second.stderr
    # The first one is untouched and still serves.
    with first.client() as client:
        assert client.get("/runs").status_code == 200
