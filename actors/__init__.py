"""The runyard runtime: actors on an asyncio loop, one supervisor per run.

Nothing in this package speaks HTTP or touches a database.  This is its one
public face; an internal service writes::

    from actors import Caller, Runtime, RuntimeConfig, StartRun

    runtime = Runtime(RuntimeConfig())
    await runtime.start()
    started = await runtime.ask(StartRun(Caller("svc"), "ticker", {"n": 3}))

Everything in ``__all__`` is the supported surface; other modules are
internals and may change.  The names are loaded lazily (PEP 562) so that a
run-code child, which imports :mod:`actors.code.child`, pays for none of the
server's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # the runtime and how to reach it
    "Runtime": "actors.runtime",
    "RuntimeConfig": "actors.config",
    "BackgroundRuntime": "actors.background",
    "ask": "actors.asyncio_actor",
    # the registry's language (requests and their replies)
    "Caller": "actors.messages",
    "SYSTEM": "actors.messages",
    "RestartPolicy": "actors.messages",
    "StartRun": "actors.messages",
    "RunStarted": "actors.messages",
    "GetRun": "actors.messages",
    "ReadRun": "actors.messages",
    "ListRuns": "actors.messages",
    "RunPage": "actors.messages",
    "Subscribe": "actors.messages",
    "Unsubscribe": "actors.messages",
    "StopRun": "actors.messages",
    "StopAccepted": "actors.messages",
    "DeleteRun": "actors.messages",
    "Evict": "actors.messages",
    "Introspect": "actors.messages",
    "LiveRunInfo": "actors.messages",
    "RegistrySnapshot": "actors.messages",
    "CheckHealth": "actors.messages",
    "Health": "actors.messages",
    "Shutdown": "actors.messages",
    "WatchRuns": "actors.messages",
    "Unwatch": "actors.messages",
    # what a subscription or a feed delivers
    "Subscription": "actors.subscription",
    "Feed": "actors.feed",
    "Finished": "actors.stream_items",
    "Lagged": "actors.stream_items",
    "Closing": "actors.stream_items",
    "RunChange": "actors.stream_items",
    # the data a run is made of
    "Event": "actors.records",
    "RunRecord": "actors.records",
    "RunSummary": "actors.records",
    "RunStatus": "actors.records",
    # writing agents
    "Agent": "actors.context",
    "RunContext": "actors.context",
    "StopRequested": "actors.context",
    "AgentCatalog": "actors.agents",
    "builtin_catalog": "actors.agents",
    # errors (each carries its HTTP status)
    "RunyardError": "actors.errors",
    "RunNotFound": "actors.errors",
    "NotOwner": "actors.errors",
    "NotAdmin": "actors.errors",
    "UnknownAgent": "actors.errors",
    "InvalidRequest": "actors.errors",
    "InvalidInput": "actors.errors",
    "AlreadyFinished": "actors.errors",
    "StillRunning": "actors.errors",
    "TooManyLiveRuns": "actors.errors",
    "ShuttingDown": "actors.errors",
    "StoreUnavailable": "actors.errors",
}

__all__ = [
    "SYSTEM",
    "Agent",
    "AgentCatalog",
    "AlreadyFinished",
    "BackgroundRuntime",
    "Caller",
    "CheckHealth",
    "Closing",
    "DeleteRun",
    "Event",
    "Evict",
    "Feed",
    "Finished",
    "GetRun",
    "Health",
    "Introspect",
    "InvalidInput",
    "InvalidRequest",
    "Lagged",
    "ListRuns",
    "LiveRunInfo",
    "NotAdmin",
    "NotOwner",
    "ReadRun",
    "RegistrySnapshot",
    "RestartPolicy",
    "RunChange",
    "RunContext",
    "RunNotFound",
    "RunPage",
    "RunRecord",
    "RunStarted",
    "RunStatus",
    "RunSummary",
    "Runtime",
    "RuntimeConfig",
    "RunyardError",
    "Shutdown",
    "ShuttingDown",
    "StartRun",
    "StillRunning",
    "StopAccepted",
    "StopRequested",
    "StopRun",
    "StoreUnavailable",
    "Subscribe",
    "Subscription",
    "TooManyLiveRuns",
    "UnknownAgent",
    "Unsubscribe",
    "Unwatch",
    "WatchRuns",
    "ask",
    "builtin_catalog",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from actors.agents import AgentCatalog, builtin_catalog
    from actors.asyncio_actor import ask
    from actors.background import BackgroundRuntime
    from actors.config import RuntimeConfig
    from actors.context import Agent, RunContext, StopRequested
    from actors.errors import (
        AlreadyFinished,
        InvalidInput,
        InvalidRequest,
        NotAdmin,
        NotOwner,
        RunNotFound,
        RunyardError,
        ShuttingDown,
        StillRunning,
        StoreUnavailable,
        TooManyLiveRuns,
        UnknownAgent,
    )
    from actors.feed import Feed
    from actors.messages import (
        SYSTEM,
        Caller,
        CheckHealth,
        DeleteRun,
        Evict,
        GetRun,
        Health,
        Introspect,
        ListRuns,
        LiveRunInfo,
        ReadRun,
        RegistrySnapshot,
        RestartPolicy,
        RunPage,
        RunStarted,
        Shutdown,
        StartRun,
        StopAccepted,
        StopRun,
        Subscribe,
        Unsubscribe,
        Unwatch,
        WatchRuns,
    )
    from actors.records import Event, RunRecord, RunStatus, RunSummary
    from actors.runtime import Runtime
    from actors.stream_items import Closing, Finished, Lagged, RunChange
    from actors.subscription import Subscription
