"""The request bodies and query parameters the client sends, built in one place.

Only the fields a caller set are sent: the server fills in its defaults and
refuses unknown fields (422), so a body never carries a stale default.
"""

from __future__ import annotations

from typing import Any


def start_body(
    agent: str,
    input_dict: dict[str, Any] | None,
    max_duration_s: float | None,
    max_restarts: int | None,
    backoff_s: float | None,
) -> dict[str, Any]:
    """``POST /runs``: ``backoff_s`` only counts together with ``max_restarts``."""
    body: dict[str, Any] = {"agent": agent, "input_dict": input_dict or {}}
    if max_duration_s is not None:
        body["max_duration_s"] = max_duration_s
    if max_restarts is not None:
        restart: dict[str, Any] = {"max_restarts": max_restarts}
        if backoff_s is not None:
            restart["backoff_s"] = backoff_s
        body["restart"] = restart
    return body


def code_body(
    code: str,
    input_dict: dict[str, Any] | None,
    agent_name: str | None,
    env: dict[str, str] | None,
    max_duration_s: float | None,
) -> dict[str, Any]:
    """``POST /agents/run-code/start``."""
    body: dict[str, Any] = {"code": code, "input_dict": input_dict or {}}
    if agent_name is not None:
        body["agent_name"] = agent_name
    if env:
        body["env"] = env
    if max_duration_s is not None:
        body["max_duration_s"] = max_duration_s
    return body


def list_params(
    status: str | None, agent: str | None, limit: int, cursor: str | None
) -> dict[str, str]:
    """``GET /runs``'s query: filters, page size and the previous page's cursor."""
    params = {"limit": str(limit)}
    if status is not None:
        params["status"] = status
    if agent is not None:
        params["agent"] = agent
    if cursor is not None:
        params["cursor"] = cursor
    return params
