"""Who may stop a run, and the reason its record keeps.

Stopping follows the one ownership rule (:mod:`runyard.actors.access`: the
owner and the admins of the run's workspace may act on it) with one
exception: a server admin may stop another user's *live* run, because a
runaway run must be stoppable by whoever operates the server, while its
trace stays private to those who may read it (``GET /runs/{id}`` and the
stream are not opened to server admins, see ``docs/design.md``).  The
record says who did it, so the owner reads "stopped by admin <id>" instead
of a stop they never asked for.
"""

from __future__ import annotations

from runyard.actors.access import Owned, check_act, may_act
from runyard.actors.messages import Caller

__all__ = ["stop_reason"]


def stop_reason(caller: Caller, run: Owned, run_id: str, reason: str, *, live: bool) -> str:
    """The reason to record when ``caller`` stops ``run_id`` (``run``: its owner
    and workspace).

    The owner's own ``reason`` is kept; an admin of the run's workspace
    stopping a member's run is recorded as ``"stopped by <id> (admin of
    workspace '<ws>')"``, a server admin stopping someone else's ``live`` run
    as ``"stopped by admin <user_id>"``.  Anyone else, and a server admin on
    another user's finished run (whose 409 would tell how it ended):
    :class:`~runyard.actors.errors.NotOwner` (403).
    """
    if caller.user_id == run.owner:
        return reason
    if may_act(caller, run):
        return f"stopped by {caller.user_id} (admin of workspace {run.workspace!r})"
    if caller.admin and live:
        return f"stopped by admin {caller.user_id}"
    check_act(caller, run, run_id)  # raises: may not act on it
    return reason
