"""``PersistenceActor``: the only thing that talks to the store.

It is a pykka thread (:class:`~runyard.persistence.loop_actor.LoopThreadActor`) so
that store I/O and the JSON encoding of big traces happen there, never on
the server's event loop.

Writes arrive batched (the runtime's store link, :mod:`runyard.actors.store_link`,
is the group commit: one ``SaveRuns`` per commit, the next once this one is
acknowledged) and are never dropped: each is merged into a pending map,
which is written with ``save_many`` once the messages already queued behind
it have been merged too (or when ``batch_max`` records are waiting).  That
merge only matters when the link stopped waiting for an ack (a commit slower
than its window, a store being retried): what it sent meanwhile goes out as
one transaction, not one per message.  A failed write keeps
the records pending and retries with backoff from a timer, while the actor
goes on answering reads; a read of a pending run answers from memory, so a
run whose write is late is never "missing".

The actor never stops for a store problem (a failed tell is logged, see
:mod:`runyard.persistence.loop_actor`), so a store that is down, read-only or frozen is only ever a
503 with a reason, and everything works again once the store does, without
a restart.  Its health (``StoreStatus``) is "up" only if the store answers
*and* writes are not failing.  A refusal of the credentials is the one
failure not retried at once (see :mod:`runyard.persistence.credentials_hold`).
What the final flush on stop could not store goes into a
:class:`~runyard.persistence.stop_report.StopReport` for the owner to act on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import pykka

from runyard.actors.errors import StoreUnavailable
from runyard.actors.persistence_protocol import (
    DeleteStored,
    FenceUnfinished,
    LoadEvents,
    LoadHeader,
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
from runyard.actors.records import Event, RunRecord, RunSummary
from runyard.persistence.backoff_timer import BackoffTimer
from runyard.persistence.credentials_hold import CredentialsHold
from runyard.persistence.loop_actor import LoopThreadActor, describe
from runyard.persistence.pending_page import in_scope, merge_page, store_limit
from runyard.persistence.stop_report import StopReport
from runyard.persistence.store import RunStore
from runyard.persistence.store_errors import CredentialsRefused
from runyard.persistence.store_stats import StoreStats

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


class PersistenceActor(LoopThreadActor):
    """Batches writes to a :class:`RunStore`, retries them, and answers reads."""

    def __init__(
        self,
        store: RunStore,
        *,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 2.0,
        batch_max: int = 500,
        stop_timeout_s: float = 5.0,
        credentials_hold_s: float = 120.0,
        stop_report: StopReport | None = None,
        stats: StoreStats | None = None,
    ) -> None:
        """``stop_report``: filled in on stop with what could not be stored;
        ``stats``: where commit latency, errors and the backlog are kept."""
        super().__init__()
        self._stats = stats if stats is not None else StoreStats()
        if batch_max < 1:
            raise ValueError("batch_max must be >= 1")
        self._store = store
        self._batch_max = batch_max
        self._stop_timeout_s = stop_timeout_s

        self._opened = False
        self._pending: dict[str, _Pending] = {}
        self._flush_queued = False
        # Waiting while backing off: only the timer's _Flush(retry=True) writes then.
        self._retry = BackoffTimer(retry_initial_s, retry_max_s, name="PersistenceActor-retry")
        self._last_error: str | None = None
        # When writes began failing (None once a round wrote everything) and the
        # last successful write: failing with no success since means the store
        # takes no writes (read-only, full); a success since, one bad record.
        self._failing_since: float | None = None
        self._saved_at = 0.0
        self._hold = CredentialsHold(credentials_hold_s)
        self._report = stop_report if stop_report is not None else StopReport()
        # The runtime's start-up reconciliation, if it failed: done at the next open.
        self._recovery_owed: tuple[str, str] | None = None
        """(node, error) of a start-up reconciliation the store was not there for."""
        self._wrote_any = False

    # ------------------------------------------------------------------ life

    def on_start(self) -> None:
        self._start_loop()
        try:
            self._ensure_open()
        except Exception as exc:
            # The store may come up later: stay alive, answer reads with
            # StoreUnavailable, and let the first write or ping open it.
            self._last_error = describe(exc)
            logger.warning("store not available at start: %s", self._last_error)
        self._serving = True

    def on_stop(self) -> None:
        self._shutdown()

    def _on_fatal(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        """Final bounded flush, then close the store and the loop: no thread survives."""
        self._retry.cancel()
        if self._loop is None:
            return
        deadline = time.monotonic() + self._stop_timeout_s
        try:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("stop timeout")
                self._ensure_open(timeout=remaining)
                batch = list(islice(self._pending.values(), self._batch_max))
                fenced = (
                    self._run(
                        self._store.save_many([p.write for p in batch]),
                        timeout=deadline - time.monotonic(),
                    )
                    or set()
                )
                self._acknowledge(batch, fenced)
        except Exception as exc:
            self._report.unsaved = list(self._pending)
            self._report.error = describe(exc)
            logger.error(
                "persistence stopping with %d unsaved record(s) (%s): %s",
                len(self._pending),
                ", ".join(islice(self._pending, 20)),
                self._report.error,
            )
        try:
            # Also when open() failed: it may have left a client session behind.
            self._run(
                self._store.close(),
                timeout=max(0.1, deadline - time.monotonic()),
                guarded=False,
            )
        except Exception as exc:
            logger.warning("closing the store failed: %s", describe(exc))
        finally:
            self._opened = False
            self._close_loop()

    def _run(
        self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None, guarded: bool = True
    ) -> T:
        """Run one store coroutine on the private loop (this thread) to completion.

        ``timeout`` only bounds truly async stores; SQLite's blocking calls
        cannot be interrupted, which is fine because they are local and short.
        ``guarded``: refused at once while the credentials hold is on.
        """
        refused = self._hold.refusal() if guarded else None
        if refused is not None:
            coro.close()
            raise refused
        try:
            return self._run_on_loop(coro, timeout, inline=self._store.awaits_nothing)
        except CredentialsRefused as exc:
            self._hold.trip(exc)
            raise

    def _ensure_open(self, *, timeout: float | None = None) -> None:
        if not self._opened:
            self._run(self._store.open(), timeout=timeout)
            self._opened = True
            self._hold.clear()
        if self._recovery_owed is not None:
            self._recover_owed(*self._recovery_owed)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """A read or maintenance call: store failures reach the asker as StoreUnavailable."""
        try:
            self._ensure_open()
            return self._run(coro)
        except Exception as exc:
            coro.close()  # harmless if it already ran; avoids "never awaited" if not
            self._stats.read_errors += 1
            self._last_error = describe(exc)
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
            case LoadHeader(run_id=run_id):
                return self._load_header(run_id)
            case LoadEvents(run_id=run_id, after_seq=after, limit=limit):
                return self._load_events(run_id, after, limit)
            case QueryRuns():
                return self._query(message)
            case DeleteStored(run_id=run_id):
                return self._delete(run_id)
            case RecoverInterrupted(node=node, error=error, skip=skip):
                return self._recover(node, error, skip)
            case FenceUnfinished(node=node):
                return self._call(self._store.fence_unfinished(node))
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
            self._stats.backlog = len(self._pending)
            return
        entry.write = entry.write.then(write)
        if ack_to is not None and all(a.actor_urn != ack_to.actor_urn for a in entry.ack_to):
            entry.ack_to.append(ack_to)

    def _after_merge(self) -> None:
        if not self._pending or self._retry.waiting:
            return  # backing off: the timer writes
        if len(self._pending) >= self._batch_max:
            self._flush()
        else:
            self._queue_flush()

    def _queue_flush(self) -> None:
        if not self._flush_queued:
            # Queued behind everything already in the inbox: by the time it is
            # handled, every SaveRuns that queued during the last write is merged.
            self._flush_queued = True
            self.actor_ref.tell(_Flush())

    def _on_flush(self, retry: bool) -> None:
        if retry:
            self._retry.fired()
        else:
            self._flush_queued = False
            if self._retry.waiting:
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
                self._last_error = describe(exc)
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
            if len(batch) == 1 or not self._ping_ok():
                failed.update(p.write.run_id for p in batch)
                break
            saved_one = False
            for n, entry in enumerate(batch):
                try:
                    self._save([entry])
                    saved_one = True
                except Exception as exc:
                    self._last_error = describe(exc)
                    failed.add(entry.write.run_id)
                    if not saved_one and n >= 1:
                        break
            if not saved_one:
                break
        if failed:
            logger.warning(
                "store write failed, %d record(s) kept pending, retry in %.2fs: %s",
                len(self._pending),
                self._retry.delay_s,
                self._last_error,
            )
            self._retry.schedule(self._retry_due)
        else:
            self._retry.reset()
            self._last_error = None
            self._failing_since = None

    def _save(self, batch: list[_Pending]) -> None:
        try:
            self._ensure_open()
            started = time.perf_counter()
            fenced = self._run(self._store.save_many([p.write for p in batch]))
        except Exception:
            self._stats.write_errors += 1
            raise
        self._stats.commit_seconds.observe(time.perf_counter() - started)
        self._wrote_any = True
        self._saved_at = time.monotonic()
        self._acknowledge(batch, fenced)

    def _acknowledge(self, batch: list[_Pending], fenced: set[str]) -> None:
        by_ref: dict[str, tuple[pykka.ActorRef[Any], list[Saved]]] = {}
        for entry in batch:
            write = entry.write
            if self._pending.get(write.run_id) is entry:
                del self._pending[write.run_id]
            saved = Saved(
                write.run_id,
                write.header.status,
                write.event_count,
                fenced=write.run_id in fenced,
            )
            for ref in entry.ack_to:
                by_ref.setdefault(ref.actor_urn, (ref, []))[1].append(saved)
        self._stats.backlog = len(self._pending)
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
            self._last_error = describe(exc)
            return False
        return True

    def _retry_due(self) -> None:
        # If the actor is stopping, on_stop makes the last attempt itself.
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(_Flush(retry=True))

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

    def _load_header(self, run_id: str) -> RunWrite | None:
        if run_id in self._pending:  # rare: a replay of a run whose write is late
            record = self._load(run_id)
            return None if record is None else RunWrite.of(record).without_events()
        return self._call(self._store.get_header(run_id))

    def _load_events(self, run_id: str, after_seq: int, limit: int) -> list[Event]:
        if run_id in self._pending:
            record = self._load(run_id)
            return [] if record is None else list(record.events[after_seq : after_seq + limit])
        return self._call(self._store.get_events(run_id, after_seq, limit))

    def _query(self, q: QueryRuns) -> list[RunSummary]:
        """The store's page with pending records merged in, as the store will have them."""
        if q.limit < 1:
            return []
        mine = [p.write for p in self._pending.values() if in_scope(p.write, q)]
        limit = store_limit(q, mine)
        if q.workspace is not None:
            query = self._store.list_for_workspace(
                q.workspace, status=q.status, agent=q.agent, limit=limit, before=q.before
            )
        else:
            assert q.owner is not None
            query = self._store.list_for_user(
                q.owner, status=q.status, agent=q.agent, limit=limit, before=q.before
            )
        return merge_page(self._call(query), mine, q)

    def _delete(self, run_id: str) -> bool:
        entry = self._pending.pop(run_id, None)
        try:
            deleted = self._call(self._store.delete(run_id))
        except StoreUnavailable:
            if entry is not None:
                self._pending[run_id] = entry  # nothing changed: keep the write
            raise
        finally:
            self._stats.backlog = len(self._pending)
        return deleted or entry is not None

    def _recover(self, node: str, error: str, skip: frozenset[str]) -> tuple[str, ...]:
        """Mark runs a dead process left running as interrupted, keeping their events.

        The rewritten records go through the pending map like any write, so
        they are readable at once and survive a store that fails right now.
        If the store cannot be read now (it is down at start-up), this is owed
        and done the first time the store opens, before anything this process
        wrote reaches it (see :meth:`_recover_owed`).
        """
        try:
            unfinished = self._call(self._store.find_unfinished(node))
        except StoreUnavailable:
            if not self._wrote_any:
                self._recovery_owed = (node, error)
            raise
        unfinished = [stored for stored in unfinished if stored.run_id not in skip]
        marked = self._mark_interrupted(unfinished, error)
        if marked and not self._retry.waiting:
            self._flush()
        return tuple(marked)

    def _recover_owed(self, node: str, error: str) -> None:
        """The start-up reconciliation that failed, once the store answers again.

        Only safe while nothing of this process is stored: a run this process
        stored as running would look interrupted.  Its writes wait in the
        pending map until the store opens, and this runs on the way to
        writing them (they are skipped here as this process's own).
        """
        if self._wrote_any:
            logger.error("start-up reconciliation skipped: this process already wrote runs")
            self._recovery_owed = None
            return
        try:
            unfinished = self._run(self._store.find_unfinished(node))
        except Exception as exc:
            logger.warning("start-up reconciliation still failing: %s", describe(exc))
            return
        self._recovery_owed = None
        marked = self._mark_interrupted(unfinished, error)
        if marked:
            logger.info("marked %d interrupted run(s) as error", len(marked))
            if not self._retry.waiting:
                self._queue_flush()

    def _mark_interrupted(self, unfinished: list[RunWrite], error: str) -> list[str]:
        now = time.time()
        marked: list[str] = []
        for stored in unfinished:
            if stored.run_id in self._pending:
                # Written by this process: its newest version is about to be written.
                continue
            self._merge(stored.interrupted(error, now), None)
            marked.append(stored.run_id)
        return marked

    def _health(self) -> StoreHealth:
        """Up means the store answers a ping *and* writes are not failing: a
        read-only store answers reads but keeps nothing."""
        backlog = len(self._pending)
        if not self._ping_ok():
            return StoreHealth(up=False, backlog=backlog, last_error=self._last_error)
        failing = self._failing_since
        if failing is not None and self._pending and self._saved_at < failing:
            return StoreHealth(
                up=False, backlog=backlog, last_error=f"writes failing: {self._last_error}"
            )
        if not self._pending:
            self._last_error = None
            self._failing_since = None
        return StoreHealth(up=True, backlog=backlog, last_error=self._last_error)
