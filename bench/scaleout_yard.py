"""The set-up the scale-out benchmark measures: one CouchDB, three runyard nodes on it.

It is the multi-node test harness (:class:`tests.multinode.Yard`: three
``runyard serve`` processes n1, n2, n3 sharing one database, nginx in
front), started once for the whole benchmark: a CouchDB and three nodes
take seconds to start, and both sides (same node, cross node) run against
the same ones.  The CouchDB is a real Apache CouchDB 3.5 from
``../shared/couchdb`` when it is there, else pouchdb-server, as the tests
choose (``RUNYARD_TEST_COUCHDB_SERVER`` forces one).

The nodes keep the production lease (``RUNYARD_LEASE_S`` 15 s: the tests'
3 s would add a lease write every second) and the tests' stop grace; the
per-user live-run limit is lifted, as for every benchmark server.

Besides the nodes, this reads what CouchDB says about the writes
(:meth:`ScaleoutYard.db_info`, :meth:`ScaleoutYard.run_docs`), for the
write-load figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from runyard.actors.jsonsafe import dumps

if TYPE_CHECKING:
    from tests.couchdb_server import CouchTestServer
    from tests.multinode import Node, Yard

NODE_ENV = {
    "RUNYARD_LEASE_S": "15",
    "RUNYARD_MAX_LIVE_RUNS_PER_USER": "100000",
}
"""Settings on top of the test harness's (``tests.multinode.NODE_ENV``)."""

USER = "alice"
"""A user the harness's nodes know (``tests.live_server.TOKENS_ENV``)."""


class SetupMissing(RuntimeError):
    """Something the set-up needs is not installed (nginx, a CouchDB server)."""


@dataclass(frozen=True)
class DbInfo:
    """A database's counters as CouchDB reports them (``GET /{db}``)."""

    doc_count: int
    update_seq: int
    """The numeric part of ``update_seq``: document writes so far (one CouchDB node)."""
    file_bytes: int | None
    """``sizes.file``: bytes on disk (None where the server does not say)."""
    external_bytes: int | None
    """``sizes.external``: the live documents' uncompressed size."""


@dataclass(frozen=True)
class RunDocs:
    """A run's documents in the database (run doc, event chunks, field parts)."""

    docs: int
    writes: int
    """The sum of their revision generations: every write of each one."""
    stored_bytes: int
    """Their JSON size as stored now (latest revisions)."""
    written_bytes: int
    """Each one's size times its revisions: the document bytes sent to write them
    all (close: a run doc's revisions differ by a few bytes)."""


class ScaleoutYard:
    """A started CouchDB and yard; :meth:`node` by id, :attr:`auth` for requests."""

    def __init__(self, couch: CouchTestServer, yard: Yard) -> None:
        self.couch = couch
        self.yard = yard
        from tests.live_server import bearer

        self.auth: dict[str, str] = bearer(USER)
        self._http = httpx.AsyncClient(base_url=couch.base_url, auth=couch.auth, timeout=30)

    @property
    def kind(self) -> str:
        """``real CouchDB 3.5`` or ``pouchdb-server``."""
        from tests.real_couchdb import RealCouchServer

        return "real CouchDB 3.5" if isinstance(self.couch, RealCouchServer) else "pouchdb-server"

    def node(self, node_id: str) -> Node:
        return self.yard.node(node_id)

    async def db_info(self) -> DbInfo:
        answer = await self._http.get(f"/{self.yard.db}")
        answer.raise_for_status()
        info = answer.json()
        sizes = info.get("sizes") or {}
        seq = str(info.get("update_seq", "0")).split("-", 1)[0]
        return DbInfo(
            doc_count=int(info.get("doc_count", 0)),
            update_seq=int(seq) if seq.isdigit() else 0,
            file_bytes=sizes.get("file"),
            external_bytes=sizes.get("external"),
        )

    async def run_docs(self, run_id: str) -> RunDocs:
        """Every document of ``run_id``: ids ``<run_id>`` and ``<run_id>:...``."""
        answer = await self._http.get(
            f"/{self.yard.db}/_all_docs",
            params={
                "startkey": dumps(run_id),
                "endkey": dumps(run_id + ":\ufff0"),
                "include_docs": "true",
            },
        )
        answer.raise_for_status()
        rows: list[dict[str, Any]] = answer.json()["rows"]
        revisions = [int(str(row["value"]["rev"]).split("-", 1)[0]) for row in rows]
        sizes = [len(dumps(row["doc"]).encode()) for row in rows]
        return RunDocs(
            docs=len(rows),
            writes=sum(revisions),
            stored_bytes=sum(sizes),
            written_bytes=sum(n * size for n, size in zip(revisions, sizes, strict=True)),
        )

    async def close(self) -> None:
        await self._http.aclose()


def _couch_server(root: Path) -> CouchTestServer:
    """The CouchDB the tests would use here (not started)."""
    from tests.couchdb_fixtures import server_kind
    from tests.couchdb_server import SERVER_BIN, CouchServer
    from tests.real_couchdb import RealCouchServer

    if server_kind() == "real":
        return RealCouchServer(root / "couchdb")
    if not SERVER_BIN.exists():
        raise SetupMissing(
            "no CouchDB: neither ../shared/couchdb nor pouchdb-server (make couchdb-deps)"
        )
    return CouchServer(root / "pouchdb")


@contextlib.asynccontextmanager
async def scaleout_yard() -> AsyncIterator[ScaleoutYard]:
    """Start a CouchDB and a yard on it; stop both (and remove their files) after.

    Raises :class:`SetupMissing` when nginx or every CouchDB server is missing.
    """
    from tests.multinode import Yard
    from tests.nginx_balancer import NginxMissing, nginx_binary

    try:
        nginx_binary()
    except NginxMissing as exc:
        raise SetupMissing(str(exc)) from None
    root = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    couch = _couch_server(root)
    try:
        await asyncio.to_thread(couch.start)
        yard = Yard(root / "yard", [couch.url], f"bench_{uuid.uuid4().hex[:12]}", **NODE_ENV)
        try:
            await asyncio.to_thread(yard.start)
            started = ScaleoutYard(couch, yard)
            try:
                yield started
            finally:
                await started.close()
        finally:
            await asyncio.to_thread(yard.close)
    finally:
        await asyncio.to_thread(couch.stop)
        shutil.rmtree(root, ignore_errors=True)
