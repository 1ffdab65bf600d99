"""pytest fixtures for the CouchDB-compatible test server (a ``pytest_plugins`` module).

- ``couch_server`` (session): a running :class:`CouchServer` (pouchdb-server +
  ``tests/couchdb/preload.js``) with its own data dir and an admin user; tests
  may ``restart()`` it (same port, same data). Stopped at the end of the session.
- ``couch_url`` (session): the admin URL with credentials,
  ``http://admin:admin-secret@127.0.0.1:PORT``. With ``RUNYARD_TEST_COUCHDB_URL``
  set, that server (e.g. a real Apache CouchDB 3) is used instead and nothing is
  started for it.

``RUNYARD_TEST_COUCHDB_NO_PRELOAD=1`` starts the stock pouchdb-server without
``preload.js``: ``tests/test_couchdb_server.py`` then shows each gap it fixes.

Each test should use a database name of its own (see ``couch_db_name``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.couchdb_server import PRELOAD, SERVER_BIN, CouchServer, CouchServerError

EXTERNAL_URL_ENV = "RUNYARD_TEST_COUCHDB_URL"
NO_PRELOAD_ENV = "RUNYARD_TEST_COUCHDB_NO_PRELOAD"


@pytest.fixture(scope="session")
def couch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CouchServer]:
    if not SERVER_BIN.exists():
        pytest.fail(
            f"pouchdb-server is not installed ({SERVER_BIN} is missing): run `make test`, "
            "which installs it (npm ci in tests/couchdb) before running pytest",
            pytrace=False,
        )
    preload = None if os.environ.get(NO_PRELOAD_ENV) == "1" else PRELOAD
    server = CouchServer(tmp_path_factory.mktemp("couchdb"), preload=preload)
    try:
        server.start()
    except CouchServerError as exc:
        server.stop()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def couch_url(request: pytest.FixtureRequest) -> str:
    external = os.environ.get(EXTERNAL_URL_ENV)
    if external:
        return external.rstrip("/")
    server: CouchServer = request.getfixturevalue("couch_server")
    return server.url


@pytest.fixture
def couch_db_name() -> str:
    """A fresh database name (CouchDB names: lowercase, start with a letter)."""
    return f"test_{uuid.uuid4().hex[:16]}"
