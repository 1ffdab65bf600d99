"""The traceback a run's user is shown: their agent's frames, not the server's.

A run's ``error`` event carries a ``traceback`` for the person who wrote the
agent.  What helps them is their own code (``File "<agent>", line 3, in run``
for run-code); the runtime's frames around it (the run actor that called the
agent, the ctx an emit went through, the run-code child's plumbing) and the
server's file paths (where it is installed, the user it runs as) are noise
to them and none of their business.  So :func:`for_user`:

- leaves out the frames of the runtime files an agent's call passes through
  (:data:`RUNTIME_FILES`, relative to the ``actors`` package);
- shows every other file path relative to the ``sys.path`` entry it was
  imported from (``httpx/_client.py``, ``json/encoder.py``), or by its base
  name; names like ``<agent>`` stay as they are.

The whole traceback, server frames and paths included, is logged for
operators where the error is handled (:mod:`runyard.actors.run`).  An exception can
carry the text its user should see instead (:func:`attach`): run-code
re-raises the child's exception with the child's own traceback, and an error
of the run-code machinery itself (the child died) shows no frames at all.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

__all__ = ["RUNTIME_FILES", "attach", "for_user", "frameless", "short_path"]

ACTORS_DIR = Path(__file__).resolve().parent
RUNTIME_FILES = frozenset(
    str(actors / name)
    # A frame names its file as it was imported: through a symlink or not.
    for actors in (ACTORS_DIR, Path(os.path.abspath(__file__)).parent)
    for name in (
        "run.py",
        "context.py",
        "jsonsafe.py",
        "quotas.py",
        "ops_log.py",
        "code/agent.py",
        "code/child.py",
        "code/protocol.py",
    )
)
"""The runtime's files between the run actor and an agent's code (both ways:
the call into the agent, and an emit or op back into the runtime)."""

_ATTR = "__runyard_user_traceback__"


def _roots() -> list[str]:
    """Directories paths are shown relative to, longest first (the most specific wins).

    Read once, at import: the run-code child imports this module before it
    locks itself in (after that it may not read the interpreter's config)."""
    roots = {str(ACTORS_DIR.parent)}
    roots.update(p for p in sys.path if p and os.path.isabs(p))
    paths = sysconfig.get_paths()
    roots.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)
    return sorted({r.rstrip(os.sep) for r in roots if r}, key=len, reverse=True)


ROOTS = _roots()


def short_path(filename: str) -> str:
    """``filename`` without the server's directories: relative to the ``sys.path``
    entry that holds it, else its base name; a pseudo name (``<agent>``) as it is."""
    if not os.path.isabs(filename):
        return filename
    for root in ROOTS:
        if filename.startswith(root + os.sep):
            return filename[len(root) + 1 :]
    return os.path.basename(filename)


def attach(exc: BaseException, text: str) -> BaseException:
    """Make ``text`` the traceback ``exc``'s user is shown (see the module doc)."""
    setattr(exc, _ATTR, text)
    return exc


def frameless(exc: BaseException) -> BaseException:
    """Show ``exc``'s user no frames at all (``ChildCrashed: killed by signal
    SIGKILL``), unless it already carries a traceback for them: for errors of
    the machinery around their code, whose frames are all the server's."""
    if not isinstance(getattr(exc, _ATTR, None), str):
        # Not format_exception_only: it names the server's module (runyard.actors.code...).
        text = str(exc)
        attach(exc, f"{type(exc).__name__}: {text}\n" if text else f"{type(exc).__name__}\n")
    return exc


def for_user(exc: BaseException, tb: TracebackType | None = None) -> str:
    """The traceback text for the author of the agent that raised ``exc``: the
    exception's chain with the runtime's frames left out and paths shortened.

    ``tb``: where to start (default: the exception's own traceback).  Text
    :func:`attach`\\ ed to ``exc`` is returned as it is.
    """
    attached = getattr(exc, _ATTR, None)
    if isinstance(attached, str):
        return attached
    shown = traceback.TracebackException(
        type(exc), exc, tb if tb is not None else exc.__traceback__, compact=True
    )
    for part in _chain(shown):
        frames = [f for f in part.stack if f.filename not in RUNTIME_FILES]
        for frame in frames:
            frame.filename = short_path(frame.filename)  # its line was read already
        part.stack = traceback.StackSummary.from_list(frames)
    return "".join(shown.format())


def _chain(root: traceback.TracebackException) -> Iterator[traceback.TracebackException]:
    """``root`` and every exception it reports: causes, contexts, group members."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        part = todo.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        yield part
        todo += [p for p in (part.__cause__, part.__context__) if p is not None]
        todo += getattr(part, "exceptions", None) or []
