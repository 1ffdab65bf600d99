"""How a run's agent ended, and what its end adds to the record.

Kept out of :mod:`runyard.actors.run` (the supervisor) because it is about the run's
*content*, not its supervision: the crash report its user sees, the result
checked against the start's ``output_schema``, and the ``done`` event's data.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from runyard.actors.output_schema import result_warnings
from runyard.actors.records import JSON, RunStatus
from runyard.actors.tracebacks import for_user

__all__ = ["ChildExited", "check_result", "crash_report", "done_data"]

logger = logging.getLogger("runyard.run")


@dataclass(frozen=True, slots=True)
class ChildExited:
    """The agent's outcome, as the run actor's child task reports it."""

    status: RunStatus
    result: JSON
    error: str | None
    schema_warnings: list[dict[str, str]] | None = None
    """Only for a ``success`` checked against an output schema (see :func:`check_result`)."""


def crash_report(run_id: str, exc: BaseException) -> tuple[dict[str, JSON], str]:
    """``(error event data, the record's error)`` for an agent that raised ``exc``.

    The event's ``traceback`` is the agent author's (:func:`runyard.actors.tracebacks.for_user`);
    the whole one, with the server's frames and paths, goes to the log for operators.
    """
    message = f"{type(exc).__name__}: {exc}"
    logger.warning("run %s: the agent failed: %s", run_id, message, exc_info=exc)
    data: dict[str, JSON] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": for_user(exc),
    }
    return data, message


async def check_result(schema: dict[str, JSON], result: JSON) -> list[dict[str, str]]:
    """The result's ``schema_warnings``, checked in a worker thread: a big result
    takes a while, and the loop is every run's.

    A stop that cancels the child task meanwhile does not undo the success:
    the run still ends ``success``, with a warning that it was not checked.
    """
    try:
        return await asyncio.to_thread(result_warnings, schema, result)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return [{"path": "", "message": "not checked: the run was stopped meanwhile"}]


def done_data(
    status: RunStatus,
    result: JSON,
    error: str | None,
    schema_warnings: list[dict[str, str]] | None,
    ops_log: dict[str, JSON],
) -> dict[str, JSON]:
    """The ``done`` event's data: ``status``, ``result``, ``error``, plus
    ``schema_warnings`` when the result was checked and ``ops_log`` when the
    run recorded operations (absent otherwise, so older readers see no change)."""
    done: dict[str, JSON] = {"status": status, "result": result, "error": error}
    if schema_warnings is not None:
        done["schema_warnings"] = schema_warnings
    if ops_log:
        done["ops_log"] = ops_log
    return done
