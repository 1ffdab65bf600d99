"""pytest fixtures for the CouchDB test servers (a ``pytest_plugins`` module).

- ``couch_server`` (session): a running server with its own data dir and an
  admin user; tests may ``restart()`` it (same port, same data). It is a real
  Apache CouchDB 3.5.0 (:class:`RealCouchServer`) when ``../shared/couchdb``
  is beside the checkout, as on the developers' machines and in CI, and
  pouchdb-server + ``tests/couchdb/preload.js`` (:class:`CouchServer`) on a
  fresh clone without it. ``RUNYARD_TEST_COUCHDB_SERVER=real|pouchdb`` forces
  one. Stopped at the end of the session.
- ``couch_url`` (session): the admin URL with credentials,
  ``http://admin:admin-secret@127.0.0.1:PORT``. With ``RUNYARD_TEST_COUCHDB_URL``
  set, that server is used instead and nothing is started for it.
- ``pouchdb_server`` / ``real_couch_server`` (session): one kind explicitly
  (``tests/test_couchdb_server.py`` checks the preload against both); skipped
  when that kind is not available. ``couch_server`` is one of these two.

``RUNYARD_TEST_COUCHDB_NO_PRELOAD=1`` starts the stock pouchdb-server without
``preload.js``: ``tests/test_couchdb_server.py`` then shows each gap it fixes.

Each test should use a database name of its own (see ``couch_db_name``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.couchdb_server import (
    PRELOAD,
    SERVER_BIN,
    CouchServer,
    CouchServerError,
    CouchTestServer,
)
from tests.real_couchdb import LAUNCHER, VERSION, RealCouchServer, launcher_present

EXTERNAL_URL_ENV = "RUNYARD_TEST_COUCHDB_URL"
NO_PRELOAD_ENV = "RUNYARD_TEST_COUCHDB_NO_PRELOAD"
SERVER_KIND_ENV = "RUNYARD_TEST_COUCHDB_SERVER"


def server_kind() -> str:
    """``"real"`` or ``"pouchdb"``: which server ``couch_server`` starts.

    The real one whenever the launcher is there: silently falling back
    would let a CI run pass on pouchdb's quirks; a forced ``real`` without
    the launcher fails in ``couch_server`` with the reason.
    """
    forced = os.environ.get(SERVER_KIND_ENV, "").strip().lower()
    if forced in ("real", "pouchdb"):
        return forced
    return "real" if launcher_present() else "pouchdb"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say in every test log which CouchDB the CouchDB tests ran against."""
    if server_kind() == "real":
        server = f"real Apache CouchDB {VERSION} ({LAUNCHER})"
    else:
        preload = "stock" if os.environ.get(NO_PRELOAD_ENV) == "1" else "with preload.js"
        why = f"{SERVER_KIND_ENV}=pouchdb" if launcher_present() else f"no {LAUNCHER}"
        server = f"pouchdb-server {preload} ({why})"
    lines = [f"couchdb tests: {server}"]
    external = os.environ.get(EXTERNAL_URL_ENV)
    if external:
        where = urlsplit(external)
        lines.append(
            f"couchdb tests: couch_url is {where.scheme}://{where.hostname}:{where.port} "
            f"({EXTERNAL_URL_ENV})"
        )
    return lines


@pytest.fixture(scope="session")
def pouchdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CouchServer]:
    if not SERVER_BIN.exists():
        pytest.skip(f"pouchdb-server is not installed ({SERVER_BIN}); `make test` installs it")
    preload = None if os.environ.get(NO_PRELOAD_ENV) == "1" else PRELOAD
    server = CouchServer(tmp_path_factory.mktemp("pouchdb"), preload=preload)
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
def real_couch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCouchServer]:
    if server_kind() != "real":
        pytest.skip(f"no real CouchDB here ({LAUNCHER} is absent or {SERVER_KIND_ENV}=pouchdb)")
    if not launcher_present():
        pytest.fail(f"{SERVER_KIND_ENV}=real but {LAUNCHER} is missing", pytrace=False)
    # Its logs stay in this dir (couchdb.log, couchdb.out) for a failed run to be read.
    server = RealCouchServer(tmp_path_factory.mktemp("couchdb"))
    try:
        server.start()
    except CouchServerError as exc:
        server.stop()
        pytest.fail(f"{exc}\n(set {SERVER_KIND_ENV}=pouchdb to run without it)", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def couch_server(request: pytest.FixtureRequest) -> CouchTestServer:
    if server_kind() == "real":
        real: RealCouchServer = request.getfixturevalue("real_couch_server")
        return real
    if not SERVER_BIN.exists():
        pytest.fail(
            f"pouchdb-server is not installed ({SERVER_BIN} is missing): run `make test`, "
            "which installs it (npm ci in tests/couchdb) before running pytest",
            pytrace=False,
        )
    pouch: CouchServer = request.getfixturevalue("pouchdb_server")
    return pouch


@pytest.fixture(scope="session")
def couch_url(request: pytest.FixtureRequest) -> str:
    external = os.environ.get(EXTERNAL_URL_ENV)
    if external:
        return external.rstrip("/")
    server: CouchTestServer = request.getfixturevalue("couch_server")
    return server.url


@pytest.fixture
def couch_db_name() -> str:
    """A fresh database name (CouchDB names: lowercase, start with a letter)."""
    return f"test_{uuid.uuid4().hex[:16]}"
