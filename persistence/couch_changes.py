"""The changes follower: what other nodes did to the runs database, as runtime messages.

One per node. It longpolls ``_changes`` from a point taken before the
runtime was told "following" (so nothing after that is missed) and turns
the rows into :class:`~runyard.actors.cluster_protocol.RunDocChanged` (a run doc
written by another node), :class:`~runyard.actors.cluster_protocol.RunDeleted` (a
run doc deleted, by anyone) and :class:`~runyard.actors.cluster_protocol.StopRequested`
(a stop request for a run of this node).

**Rows without documents, then the few documents by id.** Most changes are
event chunks (every commit of every run writes one or more, up to ~1 MB
each), and a follower needs none of them: the run doc's ``event_count``
says what is committed, and mirrors read the chunks they want. With
``include_docs`` every node would download every event of every node. So
the longpoll asks for rows only (id, rev, deleted: about 110 bytes each),
picks the run and request docs by their id shape (see
:mod:`runyard.persistence.couch_cluster_docs`; a deleted run doc needs no read at
all), and reads just those in one ``_all_docs`` request. Measured on
CouchDB 3.5 (one node; 20 runs of 200 events of 1 KB, written in commits of
10 events per run; a follower polling after each commit): 0.09 MB of rows
plus 0.19 MB of run doc reads, against 4.59 MB for the same feed with
``include_docs``. A ``_selector`` filter (type run or request, or
``_deleted``: CouchDB 3.5 matches tombstones on it) would cut the download
too, but the server would then open and match every chunk (up to 1 MB)
once per follower, where a rows-only feed opens no document at all.

**Never lose a change.** ``since`` moves only after a batch was delivered
whole. A failure (CouchDB down or restarted, a cut connection, a timeout)
is logged as one warning line per distinct error, waited out with backoff,
and the same ``since`` is polled again: a change may then be delivered
twice, never lost (the runtime's handlers judge versions, so a repeat is
harmless). On a cluster the copy answering a read may lag the one that
fed the change: a document read older than its change row (or not found)
is read again, and a batch is delivered only once every one is current.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiocouch import Database

from runyard.actors.cluster_protocol import RunDeleted, RunDocChanged, StopRequested
from runyard.persistence.couch_cluster_docs import REQUEST_TYPE, doc_kind, request_run_id
from runyard.persistence.couch_layout import RUN_TYPE, CouchStoreError
from runyard.persistence.couch_reads import read_header
from runyard.persistence.couch_requests import changes_longpoll, docs_by_id, rows_by_id
from runyard.persistence.loop_actor import describe

__all__ = ["ChangesFollower", "FollowerLagging"]

logger = logging.getLogger("runyard.cluster")

Deliver = Callable[[RunDocChanged | RunDeleted | StopRequested], None]

_ROWS_PER_POLL: Final = 500
_READ_ATTEMPTS: Final = 6
_REPEAT_WARNING_S: Final = 60.0


class FollowerLagging(RuntimeError):
    """Changed documents stayed unreadable at their changed revision (a lagging
    cluster copy): the batch is polled again later."""


@dataclass(frozen=True, slots=True)
class _Change:
    doc_id: str
    rev: str
    deleted: bool


def _generation(rev: str) -> int:
    """The ``N`` of a rev ``N-hash``: how many edits the document has had."""
    head, _, _ = rev.partition("-")
    return int(head) if head.isdigit() else 0


class ChangesFollower:
    """Follows ``db`` from ``since`` for node ``node_id``, telling ``deliver``.

    ``wait_s``: how long one longpoll waits for a change; ``timeout_s``:
    every other request's bound (and the longpoll's on top of ``wait_s``);
    ``retry_max_s``: the longest wait between attempts while CouchDB fails.
    """

    def __init__(
        self,
        db: Database,
        *,
        node_id: str,
        since: str | int,
        deliver: Deliver,
        wait_s: float,
        timeout_s: float,
        retry_max_s: float,
    ) -> None:
        self._db = db
        self._node_id = node_id
        self.since = since
        """Where the next poll starts: everything before it was delivered."""
        self._deliver = deliver
        self._wait_s = wait_s
        self._timeout_s = timeout_s
        self._retry_max_s = retry_max_s

    async def run(self) -> None:
        """Follow until cancelled; never raises anything else."""
        delay = 0.05
        failing: str | None = None
        warned_at = 0.0
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = describe(exc)
                now = time.monotonic()
                if error != failing or now - warned_at > _REPEAT_WARNING_S:
                    logger.warning(
                        "changes follower of node %s: %s; polling again from the same point",
                        self._node_id,
                        error,
                    )
                    warned_at = now
                failing = error
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            if failing is not None:
                logger.info("changes follower of node %s: following again", self._node_id)
                failing = None
            delay = 0.05

    async def poll(self) -> None:
        """One longpoll from :attr:`since`; its batch delivered, then ``since`` moved."""
        answer = await changes_longpoll(
            self._db,
            self.since,
            limit=_ROWS_PER_POLL,
            wait_s=self._wait_s,
            timeout_s=self._timeout_s,
        )
        changes: dict[str, _Change] = {}
        for row in answer["results"]:
            doc_id = row["id"]
            if doc_kind(doc_id) in ("run", "request"):
                changes.pop(doc_id, None)  # keep the last row of a document, in feed order
                revs = row.get("changes") or [{}]
                changes[doc_id] = _Change(doc_id, revs[0].get("rev", ""), bool(row.get("deleted")))
        messages = await self._messages(list(changes.values()))
        for message in messages:
            self._deliver(message)
        self.since = answer["last_seq"]

    async def _messages(
        self, changes: list[_Change]
    ) -> list[RunDocChanged | RunDeleted | StopRequested]:
        to_read = [c.doc_id for c in changes if not c.deleted]
        docs = await self._read_current(changes) if to_read else {}
        messages: list[RunDocChanged | RunDeleted | StopRequested] = []
        for change in changes:
            if change.deleted:
                if doc_kind(change.doc_id) == "run":
                    messages.append(RunDeleted(change.doc_id))
                continue
            doc = docs.get(change.doc_id)
            if doc is None:
                continue  # deleted since: its own change row follows
            message = await self._message(doc)
            if message is not None:
                messages.append(message)
        return messages

    async def _read_current(self, changes: list[_Change]) -> dict[str, dict[str, Any] | None]:
        """The changed documents at their changed rev or later (None: deleted since).

        Raises :class:`FollowerLagging` if some stay older than their change.
        """
        wanted = {c.doc_id: _generation(c.rev) for c in changes if not c.deleted}
        found: dict[str, dict[str, Any] | None] = {}
        delay = 0.02
        for _ in range(_READ_ATTEMPTS):
            rows = await rows_by_id(self._db, [i for i in wanted if i not in found])
            for doc_id, row in rows.items():
                value = row.get("value") or {}
                doc = row.get("doc")
                if value.get("deleted"):
                    found[doc_id] = None
                elif doc is not None and _generation(doc["_rev"]) >= wanted[doc_id]:
                    found[doc_id] = doc
            if len(found) == len(wanted):
                return found
            await asyncio.sleep(delay)
            delay *= 2
        missing = sorted(set(wanted) - set(found))
        raise FollowerLagging(f"{len(missing)} changed document(s) not readable yet: {missing[:3]}")

    async def _message(self, doc: dict[str, Any]) -> RunDocChanged | StopRequested | None:
        doc_id = doc["_id"]
        if doc_kind(doc_id) == "request":
            if doc.get("type") != REQUEST_TYPE or doc.get("node") != self._node_id:
                return None
            run_id = request_run_id(doc_id)
            assert run_id is not None  # doc_kind said so
            return StopRequested(run_id, str(doc.get("by")), str(doc.get("reason") or ""))
        if doc.get("type") != RUN_TYPE or doc.get("node") == self._node_id:
            return None  # not a run doc; or this node's own write: its runtime knows it
        try:
            write = await read_header(lambda ids: docs_by_id(self._db, ids), doc)
        except (CouchStoreError, KeyError, TypeError, ValueError) as exc:
            logger.warning("changes follower: skipping run doc %s: %s", doc_id, exc)
            return None
        if write is None:  # a field part replaced by a newer write, whose change follows
            return None
        return RunDocChanged(write)
