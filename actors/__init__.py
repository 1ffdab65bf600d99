"""The runyard runtime: actors on an asyncio loop, one supervisor per run.

Nothing in this package speaks HTTP or touches a database.  This is its one
public face; an internal service writes::

    from runyard.actors import Caller, Runtime, RuntimeConfig, StartRun

    runtime = Runtime(RuntimeConfig())
    await runtime.start()
    started = await runtime.ask(StartRun(Caller("svc"), "ticker", {"n": 3}))

Everything in ``__all__`` is the supported surface; other modules are
internals and may change.  The names are loaded lazily (PEP 562) so that a
run-code child, which imports :mod:`runyard.actors.code.child`, pays for none of the
server's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # the runtime and how to reach it
    "Runtime": "runyard.actors.runtime",
    "RuntimeConfig": "runyard.actors.config",
    "BackgroundRuntime": "runyard.actors.background",
    "ask": "runyard.actors.asyncio_actor",
    # the registry's language (requests and their replies)
    "Caller": "runyard.actors.messages",
    "SYSTEM": "runyard.actors.messages",
    "RestartPolicy": "runyard.actors.messages",
    "StartRun": "runyard.actors.messages",
    "RunStarted": "runyard.actors.messages",
    "GetRun": "runyard.actors.messages",
    "ReadRun": "runyard.actors.messages",
    "ListRuns": "runyard.actors.messages",
    "RunPage": "runyard.actors.messages",
    "Subscribe": "runyard.actors.messages",
    "Unsubscribe": "runyard.actors.messages",
    "StopRun": "runyard.actors.messages",
    "StopAccepted": "runyard.actors.messages",
    "DeleteRun": "runyard.actors.messages",
    "Evict": "runyard.actors.messages",
    "Introspect": "runyard.actors.messages",
    "LiveRunInfo": "runyard.actors.messages",
    "RegistrySnapshot": "runyard.actors.messages",
    "CheckHealth": "runyard.actors.messages",
    "Health": "runyard.actors.messages",
    "Shutdown": "runyard.actors.messages",
    "WatchRuns": "runyard.actors.messages",
    "Unwatch": "runyard.actors.messages",
    # what a subscription or a feed delivers
    "Subscription": "runyard.actors.subscription",
    "Feed": "runyard.actors.feed",
    "Finished": "runyard.actors.stream_items",
    "Lagged": "runyard.actors.stream_items",
    "Closing": "runyard.actors.stream_items",
    "RunChange": "runyard.actors.stream_items",
    # the data a run is made of
    "Event": "runyard.actors.records",
    "RunRecord": "runyard.actors.records",
    "RunSummary": "runyard.actors.records",
    "RunStatus": "runyard.actors.records",
    # writing agents
    "Agent": "runyard.actors.context",
    "RunContext": "runyard.actors.context",
    "StopRequested": "runyard.actors.context",
    "AgentCatalog": "runyard.actors.agents",
    "builtin_catalog": "runyard.actors.agents",
    # errors (each carries its HTTP status)
    "RunyardError": "runyard.actors.errors",
    "RunNotFound": "runyard.actors.errors",
    "NotOwner": "runyard.actors.errors",
    "NotAdmin": "runyard.actors.errors",
    "UnknownAgent": "runyard.actors.errors",
    "InvalidRequest": "runyard.actors.errors",
    "InvalidInput": "runyard.actors.errors",
    "AlreadyFinished": "runyard.actors.errors",
    "StillRunning": "runyard.actors.errors",
    "TooManyLiveRuns": "runyard.actors.errors",
    "ShuttingDown": "runyard.actors.errors",
    "StoreUnavailable": "runyard.actors.errors",
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
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from runyard.actors.agents import AgentCatalog, builtin_catalog
    from runyard.actors.asyncio_actor import ask
    from runyard.actors.background import BackgroundRuntime
    from runyard.actors.config import RuntimeConfig
    from runyard.actors.context import Agent, RunContext, StopRequested
    from runyard.actors.errors import (
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
    from runyard.actors.feed import Feed
    from runyard.actors.messages import (
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
    from runyard.actors.records import Event, RunRecord, RunStatus, RunSummary
    from runyard.actors.runtime import Runtime
    from runyard.actors.stream_items import Closing, Finished, Lagged, RunChange
    from runyard.actors.subscription import Subscription
