"""Who may do what to a run: the one ownership rule, used by every path.

A run belongs to the user who started it and, when it was started in a
workspace, is shared with that workspace's members:

- **read** (list, get, stream, the lifecycle feed): the owner, or a member
  of the run's workspace;
- **act** (stop, delete): the owner, or an admin of the run's workspace.

A server admin (``Caller.admin``) is no exception here: being an operator
unlocks introspection, not other users' traces.  Everyone else gets
:class:`~runyard.actors.errors.NotOwner` (403) on direct access and never sees
the run listed.  The registry, the stored-run reads, the listing and the
feed all ask these functions, so the rule cannot drift between them.
"""

from __future__ import annotations

import re
from typing import Final, Protocol

from runyard.actors.errors import NotMember, NotOwner
from runyard.actors.messages import Caller

__all__ = [
    "WORKSPACE_ID_PATTERN",
    "Owned",
    "check_act",
    "check_member",
    "check_read",
    "may_act",
    "may_read",
]

WORKSPACE_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Workspace ids appear in URLs, store queries and index keys: keep them plain."""


class Owned(Protocol):
    """Anything that names a run's owner and workspace (a live run, a record, a summary)."""

    @property
    def owner(self) -> str: ...

    @property
    def workspace(self) -> str | None: ...


def may_read(caller: Caller, run: Owned) -> bool:
    """The owner, or a member of the run's workspace."""
    if caller.user_id == run.owner:
        return True
    return run.workspace is not None and run.workspace in caller.workspaces


def may_act(caller: Caller, run: Owned) -> bool:
    """The owner, or an admin of the run's workspace (stop, delete)."""
    if caller.user_id == run.owner:
        return True
    return run.workspace is not None and run.workspace in caller.workspace_admin


def check_read(caller: Caller, run: Owned, run_id: str) -> None:
    """:class:`NotOwner` (403) unless :func:`may_read`."""
    if not may_read(caller, run):
        raise NotOwner(f"run {run_id} belongs to another user")


def check_act(caller: Caller, run: Owned, run_id: str) -> None:
    """:class:`NotOwner` (403) unless :func:`may_act`; says who may, to a reader who may not."""
    if may_act(caller, run):
        return
    if may_read(caller, run):
        raise NotOwner(
            f"run {run_id} belongs to {run.owner!r}: only its owner and the admins of "
            f"workspace {run.workspace!r} can stop or delete it"
        )
    raise NotOwner(f"run {run_id} belongs to another user")


def check_member(caller: Caller, workspace: str) -> None:
    """:class:`NotMember` (403) unless ``caller`` belongs to ``workspace``."""
    if workspace not in caller.workspaces:
        raise NotMember(f"you are not a member of workspace {workspace!r}")
