"""``PersistenceActor``: the only thing that talks to the store.

It is a pykka ``ThreadingActor`` so that store I/O and the JSON encoding of
big traces happen in its thread, never on the server's event loop.  The
store protocol is async (aiocouch), so the actor owns a private event loop
in that same thread and runs each store call to completion on it; between
calls the loop is idle and nothing else runs there.

Writes arrive batched (the runtime's store link, :mod:`actors.store_link`,
sends one ``SaveRuns`` per group-commit window) and are never dropped: each
is merged into a pending map, which is written with ``save_many`` once the
messages already queued behind it have been merged too (or when
``batch_max`` records are waiting), so a backlog that built up during a slow
write goes out as one transaction, not one per window.  A failed write keeps
the records pending and retries with backoff from a timer, while the actor
goes on answering reads; a read of a pending run answers from memory, so a
run whose write is late is never "missing".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import pykka

from actors.errors import StoreUnavailable
from actors.persistence_protocol import (
    DeleteStored,
    LoadRun,
    PurgeStored,
    QueryRuns,
    RecoverInterrupted,
    RunsPersisted,
    RunWrite,
    Saved,
    SaveRuns,
    StoreHealth,
    StoreStatus,
)
from actors.records import RunRecord, RunSummary, replaces
from persistence.store import RunStore

__all__ = ["PersistenceActor"]

logger = logging.getLogger("runyard.persistence")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Flush:
    """Private: write what is pending.

    ``retry`` comes from the backoff timer; the plain one is queued by the
    actor itself behind the messages already in its inbox, which is what
    turns a burst of ``SaveRuns`` into a few ``save_many`` calls.
    """

    retry: bool = False


@dataclass(slots=True)
class _Pending:
    write: RunWrite
    ack_to: list[pykka.ActorRef[Any]] = field(default_factory=list)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _key(s: RunSummary) -> tuple[float, str]:
    return (s.started_at, s.run_id)


class PersistenceActor(pykka.ThreadingActor):
    """Batches writes to a :class:`RunStore`, retries them, and answers reads."""

    def __init__(
        self,
        store: RunStore,
        *,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        batch_max: int = 500,
        stop_timeout_s: float = 5.0,
    ) -> None:
        super().__init__()
        if batch_max < 1:
            raise ValueError("batch_max must be >= 1")
        self._store = store
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = max(retry_max_s, retry_initial_s)
        self._batch_max = batch_max
        self._stop_timeout_s = stop_timeout_s

        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened = False
        self._pending: dict[str, _Pending] = {}
        self._flush_queued = False
        self._backoff_s = retry_initial_s
        # Set while backing off: only the timer's _Flush(retry=True) writes then.
        self._retry_timer: threading.Timer | None = None
        self._last_error: str | None = None

    # ------------------------------------------------------------------ life

    def on_start(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._ensure_open()
        except Exception as exc:
            # The store may come up later: stay alive, answer reads with
            # StoreUnavailable, and let the first write or ping open it.
            self._last_error = _describe(exc)
            logger.warning("store not available at start: %s", self._last_error)

    def on_stop(self) -> None:
        self._shutdown()

    def on_failure(self, *_exc_info: Any) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        """Final bounded flush, then close the store and the loop: no thread survives."""
        self._cancel_retry_timer()
        loop = self._loop
        if loop is None:
            return
        deadline = time.monotonic() + self._stop_timeout_s
        try:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("stop timeout")
                self._ensure_open(timeout=remaining)
                batch = list(islice(self._pending.values(), self._batch_max))
                self._run(
                    self._store.save_many([p.write for p in batch]),
                    timeout=deadline - time.monotonic(),
                )
                self._acknowledge(batch)
        except Exception as exc:
            ids = list(islice(self._pending, 20))
            logger.error(
                "persistence stopping with %d unsaved record(s) (%s): %s",
                len(self._pending),
                ", ".join(ids),
                _describe(exc),
            )
        try:
            # Also when open() failed: it may have left a client session behind.
            self._run(self._store.close(), timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:
            logger.warning("closing the store failed: %s", _describe(exc))
        finally:
            self._opened = False
            self._close_loop(loop)

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            # Joins resolver/executor threads a client library may have started.
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            asyncio.set_event_loop(None)
            self._loop = None

    def _run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run one store coroutine on the private loop (this thread) to completion.

        ``timeout`` only bounds truly async stores; SQLite's blocking calls
        cannot be interrupted, which is fine because they are local and short.
        """
        if self._loop is None:
            coro.close()
            raise RuntimeError("the persistence actor's loop is closed")
        if timeout is not None:
            return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))
        return self._loop.run_until_complete(coro)

    def _ensure_open(self, *, timeout: float | None = None) -> None:
        if not self._opened:
            self._run(self._store.open(), timeout=timeout)
            self._opened = True

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """A read or maintenance call: store failures reach the asker as StoreUnavailable."""
        try:
            self._ensure_open()
            return self._run(coro)
        except Exception as exc:
            coro.close()  # harmless if it already ran; avoids "never awaited" if not
            self._last_error = _describe(exc)
            raise StoreUnavailable(f"store unavailable: {self._last_error}") from exc

    # -------------------------------------------------------------- messages

    def on_receive(self, message: Any) -> Any:
        match message:
            case SaveRuns(writes=writes, ack_to=ack_to):
                for write in writes:
                    self._merge(write, ack_to)
                self._after_merge()
                return None
            case _Flush(retry=retry):
                self._on_flush(retry)
                return None
            case LoadRun(run_id=run_id):
                return self._load(run_id)
            case QueryRuns():
                return self._query(message)
            case DeleteStored(run_id=run_id):
                return self._delete(run_id)
            case RecoverInterrupted(node=node, error=error):
                return self._recover(node, error)
            case PurgeStored(cutoff=cutoff, batch=batch):
                return self._call(self._store.purge_older_than(cutoff, batch=batch))
            case StoreStatus():
                return self._health()
            case _:
                return super().on_receive(message)

    # ---------------------------------------------------------------- writes

    def _merge(self, write: RunWrite, ack_to: pykka.ActorRef[Any] | None) -> None:
        entry = self._pending.get(write.run_id)
        if entry is None:
            self._pending[write.run_id] = _Pending(write, [ack_to] if ack_to else [])
            return
        entry.write = entry.write.then(write)
        if ack_to is not None and all(a.actor_urn != ack_to.actor_urn for a in entry.ack_to):
            entry.ack_to.append(ack_to)

    def _after_merge(self) -> None:
        if not self._pending or self._retry_timer is not None:
            return  # backing off: the timer writes
        if len(self._pending) >= self._batch_max:
            self._flush()
        elif not self._flush_queued:
            # Queued behind everything already in the inbox: by the time it is
            # handled, every SaveRuns that queued during the last write is merged.
            self._flush_queued = True
            self.actor_ref.tell(_Flush())

    def _on_flush(self, retry: bool) -> None:
        if retry:
            self._retry_timer = None
        else:
            self._flush_queued = False
            if self._retry_timer is not None:
                return
        self._flush()

    def _flush(self) -> None:
        """Write everything pending in batches; on failure keep it and back off.

        If a batch fails while the store answers pings, one record may be the
        problem (too large, refused by the server...): the batch is retried
        record by record so the others are not held hostage, and the bad one
        stays pending and keeps being retried.  If single writes fail too, the
        store is down for writes (disk full, read-only) and the round ends.
        """
        failed: set[str] = set()
        while True:
            batch = list(
                islice(
                    (p for rid, p in self._pending.items() if rid not in failed),
                    self._batch_max,
                )
            )
            if not batch:
                break
            try:
                self._save(batch)
                continue
            except Exception as exc:
                self._last_error = _describe(exc)
            if len(batch) == 1 or not self._ping_ok():
                failed.update(p.write.run_id for p in batch)
                break
            saved_one = False
            for n, entry in enumerate(batch):
                try:
                    self._save([entry])
                    saved_one = True
                except Exception as exc:
                    self._last_error = _describe(exc)
                    failed.add(entry.write.run_id)
                    if not saved_one and n >= 1:
                        break
            if not saved_one:
                break
        if failed:
            logger.warning(
                "store write failed, %d record(s) kept pending, retry in %.2fs: %s",
                len(self._pending),
                self._backoff_s,
                self._last_error,
            )
            self._schedule_retry()
        else:
            self._backoff_s = self._retry_initial_s
            self._last_error = None

    def _save(self, batch: list[_Pending]) -> None:
        self._ensure_open()
        self._run(self._store.save_many([p.write for p in batch]))
        self._acknowledge(batch)

    def _acknowledge(self, batch: list[_Pending]) -> None:
        by_ref: dict[str, tuple[pykka.ActorRef[Any], list[Saved]]] = {}
        for entry in batch:
            write = entry.write
            if self._pending.get(write.run_id) is entry:
                del self._pending[write.run_id]
            saved = Saved(write.run_id, write.header.status, write.event_count)
            for ref in entry.ack_to:
                by_ref.setdefault(ref.actor_urn, (ref, []))[1].append(saved)
        for ref, versions in by_ref.values():
            try:
                ref.tell(RunsPersisted(saved=tuple(versions)))
            except pykka.ActorDeadError:
                logger.debug("ack target %s is gone", ref)

    def _ping_ok(self) -> bool:
        try:
            self._ensure_open()
            self._run(self._store.ping())
        except Exception as exc:
            self._last_error = _describe(exc)
            return False
        return True

    def _schedule_retry(self) -> None:
        if self._retry_timer is not None:
            return
        delay = self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self._retry_max_s)
        timer = threading.Timer(delay, self._retry_due)
        timer.name = f"{self.actor_ref.actor_class.__name__}-retry"
        timer.daemon = True
        self._retry_timer = timer
        timer.start()

    def _retry_due(self) -> None:
        # If the actor is stopping, on_stop makes the last attempt itself.
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(_Flush(retry=True))

    def _cancel_retry_timer(self) -> None:
        timer, self._retry_timer = self._retry_timer, None
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()

    # ----------------------------------------------------------------- reads

    def _load(self, run_id: str) -> RunRecord | None:
        entry = self._pending.get(run_id)
        if entry is not None:
            try:
                stored = self._call(self._store.get(run_id))
            except StoreUnavailable:
                if entry.write.first_seq > 1:
                    raise  # the events before the pending ones are only in the store
                stored = None
            # What the store will hold once the pending write is applied.
            return entry.write.applied_to(stored)
        return self._call(self._store.get(run_id))

    def _query(self, q: QueryRuns) -> list[RunSummary]:
        """The store's page with pending records merged in, as the store will have them.

        Pending versions can push stored rows out of the filter, so the store
        is asked for ``limit`` plus the number of pending runs of that owner,
        which is always enough to fill the page.
        """
        if q.limit < 1:
            return []
        mine = [p.write for p in self._pending.values() if p.write.header.owner == q.owner]
        stored = self._call(
            self._store.list_for_user(
                q.owner,
                status=q.status,
                agent=q.agent,
                limit=q.limit + len(mine),
                before=q.before,
            )
        )
        if not mine:
            return stored[: q.limit]
        pending = {r.run_id: r for r in mine}
        merged: dict[str, RunSummary] = {}
        for s in stored:
            p = pending.get(s.run_id)
            if p is None or not replaces(p.version, (s.status, s.event_count, 0.0)):
                merged[s.run_id] = s
            else:
                del pending[s.run_id]
                if self._matches(p, q):
                    merged[s.run_id] = p.summary()
        for p in pending.values():
            if self._matches(p, q):
                merged[p.run_id] = p.summary()
        # A pending running checkpoint of a run stored as terminal elsewhere in the
        # order is not visible here; the store ignores it when it is written anyway.
        return sorted(merged.values(), key=_key, reverse=True)[: q.limit]

    @staticmethod
    def _matches(w: RunWrite, q: QueryRuns) -> bool:
        r = w.header
        return (
            (q.status is None or r.status == q.status)
            and (q.agent is None or r.agent == q.agent)
            and (q.before is None or (r.started_at, r.run_id) < q.before)
        )

    def _delete(self, run_id: str) -> bool:
        entry = self._pending.pop(run_id, None)
        try:
            deleted = self._call(self._store.delete(run_id))
        except StoreUnavailable:
            if entry is not None:
                self._pending[run_id] = entry  # nothing changed: keep the write
            raise
        return deleted or entry is not None

    def _recover(self, node: str, error: str) -> tuple[str, ...]:
        """Mark runs a dead process left running as interrupted, keeping their events.

        The rewritten records go through the pending map like any write, so
        they are readable at once and survive a store that fails right now.
        """
        now = time.time()
        marked: list[str] = []
        for stored in self._call(self._store.find_unfinished(node)):
            entry = self._pending.get(stored.run_id)
            if entry is not None:
                # Written by this process: its newest version is about to be written.
                continue
            self._merge(stored.interrupted(error, now), None)
            marked.append(stored.run_id)
        if marked and self._retry_timer is None:
            self._flush()
        return tuple(marked)

    def _health(self) -> StoreHealth:
        up = self._ping_ok()
        if up and not self._pending:
            self._last_error = None
        return StoreHealth(up=up, backlog=len(self._pending), last_error=self._last_error)
