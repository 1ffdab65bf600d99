"""The CouchDB requests :class:`~runyard.persistence.couch_store.CouchStore` makes, via aiocouch.

Opening (the session, the database created if missing, made admin-only, its
Mango indexes), reads by id, ``_bulk_docs`` in bounded requests and sorted,
paged ``_find``; for the cluster backend, single-document writes that tell a
201 from a 202 and a longpoll of ``_changes``. aiocouch's public bulk and
find calls wrap every document in a ``Document`` (its ``find`` refuses
``fields``), which costs the store's batches their speed; its ``Document``
hides the write's status and its ``changes`` drops ``last_seq``. So its
private calls (``_bulk_docs``, ``_find``, ``_remote._request``) are made
here and nowhere else.

A 401 while opening or pinging becomes
:class:`~runyard.persistence.store_errors.CredentialsRefused`: a configuration error
that must not be retried in a loop (CouchDB locks the account out).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Final, cast
from urllib.parse import quote, unquote, urlsplit

import aiohttp
from aiocouch import CouchDB, Database, NotFoundError, UnauthorizedError
from aiocouch.exception import RemoteResponseError

from runyard.actors.jsonsafe import dumps
from runyard.persistence.couch_layout import CouchStoreError
from runyard.persistence.store_errors import CredentialsRefused

__all__ = [
    "INDEX_BY_FINISHED",
    "INDEX_BY_OWNER",
    "INDEX_BY_STATUS",
    "INDEX_BY_WORKSPACE",
    "Index",
    "bulk_docs",
    "changes_longpoll",
    "delete_rev",
    "docs_by_id",
    "docs_in_range",
    "find",
    "find_all",
    "get_doc",
    "make_admin_only",
    "open_database",
    "ping",
    "put_doc",
    "revs_by_id",
    "rows_by_id",
    "update_seq",
]

Index = tuple[str, str, list[str]]
"""A Mango index: (design doc, index name, fields)."""

# Queries sort on *all* fields of the index they use (equality fields too),
# which every CouchDB 3 accepts.
INDEX_BY_OWNER: Final[Index] = ("runyard-by-owner", "by-owner", ["owner", "started_at", "run_id"])
INDEX_BY_WORKSPACE: Final[Index] = (
    "runyard-by-workspace",
    "by-workspace",
    ["workspace", "started_at", "run_id"],
)
"""Only run docs with a ``workspace`` field (a personal run has none) are in it."""
INDEX_BY_STATUS: Final[Index] = ("runyard-by-status", "by-status", ["status", "run_id"])
INDEX_BY_FINISHED: Final[Index] = ("runyard-by-finished", "by-finished", ["finished_at"])
INDEXES: Final = (INDEX_BY_OWNER, INDEX_BY_WORKSPACE, INDEX_BY_STATUS, INDEX_BY_FINISHED)

_BULK_MAX_DOCS = 500


async def open_database(
    url: str, name: str, *, timeout_s: float, idle_timeout_s: float | None = None
) -> tuple[CouchDB, Database]:
    """A session on ``url`` and its database ``name``, created if missing, made
    admin-only and indexed (each step harmless when done already).

    ``timeout_s`` bounds every request of the session; ``idle_timeout_s`` the
    wait to connect and for each read from the server, so a frozen server
    fails a request in that time while a big but moving one may take longer.

    Raises :class:`CredentialsRefused` on a 401, aiocouch's errors, or
    :class:`CouchStoreError` (see :func:`make_admin_only`); the session is
    closed then.
    """
    # Credentials stay in the URL: aiohttp sends them as basic auth on every
    # request (its ``auth=`` parameter, which aiocouch's user/password use,
    # is deprecated). The session encodes JSON bodies compactly in UTF-8:
    # that is the encoding the document sizes are measured in.
    timeout = aiohttp.ClientTimeout(
        total=timeout_s, sock_connect=idle_timeout_s, sock_read=idle_timeout_s
    )
    couch = CouchDB(url, json_serialize=dumps, timeout=timeout)
    try:
        try:
            db = await couch[name]
        except NotFoundError:
            db = await couch.create(name, exists_ok=True)
        await make_admin_only(db)
        for ddoc, index_name, fields in INDEXES:
            await db.index({"fields": fields}, ddoc=ddoc, name=index_name, type="json")
    except UnauthorizedError as exc:
        await couch.close()
        raise credentials_refused(url, exc) from None
    except BaseException:
        await couch.close()
        raise
    return couch, db


async def ping(url: str, db: Database) -> None:
    """One cheap read of ``db`` (its info); :class:`CredentialsRefused` on a 401."""
    try:
        await db.info()
    except UnauthorizedError as exc:
        raise credentials_refused(url, exc) from None


def credentials_refused(url: str, exc: Exception) -> CredentialsRefused:
    """The 401 ``exc`` from the server at ``url``, naming the user, never the password."""
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username is not None else None
    server = f"{parts.scheme}://{parts.hostname}:{parts.port or 5984}"
    who = f"user {user!r}" if user is not None else "no user (no credentials were given)"
    return CredentialsRefused(
        f"CouchDB at {server} refused {who}: 401 unauthorized ({exc})", user=user, server=server
    )


async def make_admin_only(db: Database) -> None:
    """Let only server admins read or write ``db``, unless its members are set already.

    A new CouchDB 3 database is admin-only; pouchdb-server's and older
    CouchDBs' are public. Raises :class:`CouchStoreError` if the database is
    public and its ``_security`` cannot be set.
    """
    security = await db.security()
    if security.members or security.member_roles:
        return  # access already restricted (by us or by the operator)
    security.add_admin_role("_admin")
    security.add_member_role("_admin")
    try:
        await security.save()
    except Exception as exc:
        raise CouchStoreError(
            f"database {db.id!r} is readable by anyone and its _security "
            f"could not be set ({exc}); set members in its _security"
        ) from exc


async def docs_by_id(db: Database, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The live documents among ``ids`` (missing and deleted ones are left out)."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 100):
        keys = list(ids[start : start + 100])
        response = await db.all_docs.post(keys, include_docs=True)
        for row in response.rows:
            doc = row.get("doc")
            if doc is not None and "error" not in row:
                found[row["id"]] = doc
    return found


async def revs_by_id(db: Database, ids: Iterable[str]) -> dict[str, str]:
    """Current revs of the live documents among ``ids``."""
    keys = sorted(set(ids))
    revs: dict[str, str] = {}
    for start in range(0, len(keys), 500):
        response = await db.all_docs.post(keys[start : start + 500])
        for row in response.rows:
            value = row.get("value") or {}
            if "error" not in row and not value.get("deleted"):
                revs[row["id"]] = value["rev"]
    return revs


async def bulk_docs(
    db: Database, docs: list[dict[str, Any]], sizes: Sequence[int] | None, *, max_bytes: int
) -> list[dict[str, Any]]:
    """``_bulk_docs`` in requests of at most ``max_bytes`` (by ``sizes``, the
    documents' encoded sizes; 256 each if None) and 500 documents; one result
    per document, in order."""
    results: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    size = 0
    for i, doc in enumerate(docs):
        doc_size = 256 if sizes is None else sizes[i]
        if batch and (size + doc_size > max_bytes or len(batch) >= _BULK_MAX_DOCS):
            results += await _bulk_request(db, batch)
            batch, size = [], 0
        batch.append(doc)
        size += doc_size
    if batch:
        results += await _bulk_request(db, batch)
    return results


async def _bulk_request(db: Database, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # aiocouch annotates the answer as an object; CouchDB sends a list.
    return cast(list[dict[str, Any]], await db._bulk_docs(batch))


async def find(db: Database, selector: dict[str, Any], **params: Any) -> dict[str, Any]:
    """One ``_find`` request: ``{"docs": [...], "bookmark": ...}``."""
    return await db._find(selector, **params)


async def find_all(
    db: Database, selector: dict[str, Any], index: Index, fields: list[str], *, page: int
) -> list[dict[str, Any]]:
    """Every match, ``page`` at a time, until a page is short (never trusting a bookmark)."""
    ddoc, name, index_fields = index
    docs: list[dict[str, Any]] = []
    bookmark: str | None = None
    while True:
        params: dict[str, Any] = {
            "sort": [{f: "asc"} for f in index_fields],
            "limit": page,
            "fields": fields,
            "use_index": [ddoc, name],
        }
        if bookmark is not None:
            params["bookmark"] = bookmark
        answer = await find(db, selector, **params)
        docs += answer["docs"]
        if len(answer["docs"]) < page:
            return docs
        bookmark = answer["bookmark"]


async def docs_in_range(
    db: Database, startkey: str, endkey: str, *, page: int, first_page: int | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """The live documents with ids in ``[startkey, endkey]``, in id order, ``page`` at a time.

    ``first_page``: a smaller first request, doubled on each next one up to
    ``page``, for callers that usually need only the first few documents
    (an event page may sit in one chunk of a megabyte: reading 32 of them
    to use one made a paged replay quadratic).  A page ends short only at
    the end of the range; the caller stops early by not asking for the next one.
    """
    params: dict[str, Any] = {"endkey": json.dumps(endkey), "include_docs": True}
    start = json.dumps(startkey)
    skip = 0
    limit = min(page, first_page or page)
    while True:
        response = await db.all_docs.get(startkey=start, skip=skip, limit=limit, **params)
        rows = response.rows
        yield [row["doc"] for row in rows if row.get("doc") is not None]
        if len(rows) < limit:
            return
        start, skip = json.dumps(rows[-1]["id"]), 1
        limit = min(page, limit * 2)


async def rows_by_id(db: Database, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``_all_docs`` rows (with ``doc``) of ``ids`` by id, deleted and missing ones
    included: ``value.deleted`` marks a deleted one, ``error: not_found`` one
    the answering copy never had."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 100):
        keys = list(ids[start : start + 100])
        response = await db.all_docs.post(keys, include_docs=True)
        for row in response.rows:
            found[row["key"]] = row
    return found


def _doc_path(db: Database, doc_id: str) -> str:
    return f"{db.endpoint}/{quote(doc_id, safe='')}"


async def put_doc(db: Database, doc: dict[str, Any]) -> tuple[int, str | None]:
    """PUT one document (``_id``, and ``_rev`` to update one): ``(status, new rev)``.

    201: stored on a quorum of copies; 202: accepted by fewer (a cluster with
    copies down or a competing write: not known to have won); 409: its
    ``_rev`` is not the current one (rev None). Other statuses raise
    aiocouch's ``RemoteResponseError``.
    """
    try:
        response, answer = await db._remote._request("PUT", _doc_path(db, doc["_id"]), json=doc)
    except RemoteResponseError as exc:
        if exc.status == 409:
            return 409, None
        raise
    return response.status, cast(dict[str, Any], answer).get("rev")


async def delete_rev(db: Database, doc_id: str, rev: str) -> int:
    """Delete revision ``rev`` of ``doc_id`` (a leaf: the current one, or a
    conflicting branch): the status, 409 if it is no leaf (any more)."""
    try:
        response, _ = await db._remote._request(
            "DELETE", _doc_path(db, doc_id), params={"rev": rev}
        )
    except RemoteResponseError as exc:
        if exc.status in (404, 409):
            return exc.status
        raise
    return response.status


async def update_seq(db: Database) -> str | int:
    """The database's current update sequence: where a changes feed starts to see
    only what comes next (opaque: a string on CouchDB, a number on PouchDB)."""
    info = await db.info()
    return cast(str | int, info["update_seq"])


async def changes_longpoll(
    db: Database, since: str | int, *, limit: int, wait_s: float, timeout_s: float
) -> dict[str, Any]:
    """One ``_changes?feed=longpoll`` from ``since``: ``{"results": [...], "last_seq": ...}``.

    Rows carry ``id``, ``changes`` (the winning rev) and ``deleted``, no
    documents. The server answers at once if anything changed, else after
    ``wait_s`` with no rows; the request fails after ``wait_s + timeout_s``.
    ``seq_interval`` spares a cluster the cost of a seq on every row (only
    ``last_seq`` is used).
    """
    params = {
        "feed": "longpoll",
        "since": since,
        "limit": limit,
        "seq_interval": limit,
        "timeout": int(wait_s * 1000),
    }
    bound = wait_s + timeout_s
    timeout = aiohttp.ClientTimeout(total=bound, sock_connect=timeout_s, sock_read=bound)
    _, answer = await db._remote._request(
        "GET", f"{db.endpoint}/_changes", params=params, timeout=timeout
    )
    return cast(dict[str, Any], answer)


async def get_doc(db: Database, doc_id: str, **params: Any) -> dict[str, Any] | None:
    """``GET`` one document (a quorum read on a cluster; ``params`` such as
    ``conflicts=True``); None if it is missing or deleted."""
    try:
        _, answer = await db._remote._request("GET", _doc_path(db, doc_id), params=params)
    except RemoteResponseError as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], answer)
