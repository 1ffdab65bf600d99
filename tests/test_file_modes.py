"""Every file runyard creates is private (0600), even in a data dir that
already existed with a permissive mode and under a permissive umask."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from runyard.actors.persistence_protocol import RunWrite
from runyard.actors.records import RunRecord
from runyard.persistence.sqlite_store import SQLiteStore
from tests.live_server import ServerProcessFactory

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_the_sqlite_files_are_private_in_an_open_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    store = SQLiteStore(data_dir / "runs.sqlite3")

    async def write_one() -> None:
        await store.open()
        record = RunRecord("r", "alice", "echo", "running", {}, started_at=1.0, updated_at=1.0)
        await store.save_many([RunWrite.of(record)])

    asyncio.run(write_one())
    try:
        files = sorted(p for p in data_dir.iterdir() if p.name.startswith("runs.sqlite3"))
        # the database, its write-ahead log and its shared-memory index
        assert [p.name for p in files] == ["runs.sqlite3", "runs.sqlite3-shm", "runs.sqlite3-wal"]
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        asyncio.run(store.close())


@pytest.mark.server
@pytest.mark.usefixtures("permissive_umask")
def test_a_server_in_an_open_data_dir_creates_only_private_files(
    tmp_path: Path, server_process: ServerProcessFactory
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    server = server_process(data_dir)
    with server.client() as client:
        answer = client.post("/runs", json={"agent": "echo", "input_dict": {"x": 1}})
        assert answer.status_code == 202, answer.text
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    created = sorted(p for p in data_dir.rglob("*") if p.is_file())
    assert any(p.name == "runs.sqlite3" for p in created), created
    assert {str(p.relative_to(data_dir)): _mode(p) for p in created} == {
        str(p.relative_to(data_dir)): 0o600 for p in created
    }
