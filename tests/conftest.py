"""Shared fixtures: the async test backend, the CouchDB-compatible server and live runyard servers.

Async tests are ``async def`` functions marked ``@pytest.mark.anyio``; the
anyio pytest plugin (installed with anyio) runs each on its own event loop
with the backend named below.  No ``asyncio.run`` wrappers in tests.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.couchdb_fixtures",
    "tests.couch_store_fixtures",
    "tests.live_server",
    "tests.multinode",
    "tests.browser_helpers",
]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """asyncio only: the runtime is built on asyncio (pykka actors on its loop), not trio."""
    return "asyncio"


@pytest.fixture
def clean_runyard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``RUNYARD_*`` from the developer's shell leaks into a test that reads the environment."""
    for name in list(os.environ):
        if name.upper().startswith("RUNYARD_"):
            monkeypatch.delenv(name)
