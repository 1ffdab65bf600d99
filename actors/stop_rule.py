"""Who may stop a run, and the reason its record keeps.

Stopping is the one act on a run an admin may take for another user: a
runaway run must be stoppable by whoever operates the server, while its trace
stays private to its owner (``GET /runs/{id}`` and the stream remain
owner-only, see ``docs/design.md``).  The record says who did it, so the owner
reads "stopped by admin <id>" instead of a stop they never asked for.
"""

from __future__ import annotations

from runyard.actors.messages import Caller
from runyard.actors.stored_runs import check_owner

__all__ = ["stop_reason"]


def stop_reason(caller: Caller, owner: str, run_id: str, reason: str, *, live: bool) -> str:
    """The reason to record when ``caller`` stops ``run_id`` (owned by ``owner``).

    The owner's own ``reason`` is kept; an admin stopping someone else's
    ``live`` run is recorded as ``"stopped by admin <user_id>"``.  Anyone
    else, and an admin on another user's finished run (whose 409 would tell
    how it ended): :class:`~runyard.actors.errors.NotOwner` (403).
    """
    if caller.user_id == owner:
        return reason
    if caller.admin and live:
        return f"stopped by admin {caller.user_id}"
    check_owner(caller, owner, run_id)  # raises: not the owner
    return reason
