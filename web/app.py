"""``create_app``: the composition root.

This is the one place that picks the store (SQLite by default, CouchDB when
``RUNYARD_COUCHDB_URL`` is set), starts the persistence actor and the
runtime, and mounts the routes.  Everything else receives what it needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pykka
from fastapi import FastAPI

from actors.agents import AgentCatalog
from actors.clock import Clock
from actors.code.agent import make_code_agent
from actors.context import AgentFactory
from actors.runtime import Runtime
from persistence.actor import PersistenceActor
from persistence.store import RunStore
from web.auth import Authenticator, install_auth
from web.config import ConfigError, Settings
from web.errors import install_error_handlers
from web.gateway import Gateway
from web.gc_tuning import tune_gc
from web.loop_monitor import LoopMonitor
from web.node import DataDirLock, node_id
from web.routes import dashboard, feed, ops, run_code, runs, schema, stream

API_DESCRIPTION = """Durable, reconnectable agent runs.  Start a run and get its `run_id` at
once; follow it over SSE, leave, come back and resume exactly where you were;
stop it; find it after it finished.  Every endpoint but `/healthz` needs a
token (`Authorization: Bearer <token>` or the session cookie from
`POST /auth/session`); you only ever see your own runs."""


def build_store(settings: Settings) -> RunStore:
    if settings.couchdb_url:
        from persistence.couch_store import CouchStore

        return CouchStore(couchdb_url(settings), db=settings.couchdb_db)
    from persistence.sqlite_store import SQLiteStore

    return SQLiteStore(settings.data_dir / "runs.sqlite3")


def couchdb_url(settings: Settings) -> str:
    """The CouchDB URL, with RUNYARD_COUCHDB_USER/PASSWORD put in when they are set."""
    url = settings.couchdb_url or ""
    if settings.couchdb_user is None:
        return url
    parts = urlsplit(url)
    if parts.username is not None:
        raise ConfigError(
            "RUNYARD_COUCHDB_URL already carries credentials; drop them or RUNYARD_COUCHDB_USER"
        )
    auth = quote(settings.couchdb_user, safe="")
    if settings.couchdb_password is not None:
        auth += ":" + quote(settings.couchdb_password, safe="")
    return urlunsplit(parts._replace(netloc=f"{auth}@{parts.netloc}"))


def create_app(
    settings: Settings | None = None,
    *,
    catalog: AgentCatalog | None = None,
    clock: Clock | None = None,
    store: RunStore | None = None,
    code_agent: AgentFactory | None = None,
    data_dir_lock: DataDirLock | None = None,
) -> FastAPI:
    """The app.  With the SQLite store it holds the data dir's lock while it serves
    (``data_dir_lock``: one the caller already took, as ``runyard serve`` does to
    refuse a second process before anything starts)."""
    settings = settings or Settings()
    authenticator = Authenticator.from_settings(settings)
    if settings.couchdb_url:
        couchdb_url(settings)  # a bad credentials combination fails now, not at start-up

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lock = data_dir_lock
        if lock is None and store is None and not settings.couchdb_url:
            lock = DataDirLock(settings.data_dir)
            lock.acquire()  # SQLite is single-node: a second process is refused here
        the_store = store or build_store(settings)
        persistence: pykka.ActorRef[Any] = PersistenceActor.start(the_store)
        runs_code = code_agent or make_code_agent(settings.code_settings())
        runtime = Runtime(
            settings.runtime_config(
                node_id=node_id(settings), write_window_s=the_store.commit_window_s
            ),
            catalog=catalog,
            persistence=persistence,
            clock=clock,
            code_agent=runs_code,
        )
        await runtime.start()
        # Pre-start the run-code pool now, so the first submitted run is warm too.
        await runs_code.start()
        tune_gc()
        monitor = LoopMonitor()
        monitor.start()
        gateway = Gateway(runtime)
        app.state.gateway = gateway
        app.state.loop_monitor = monitor
        try:
            yield
        finally:
            await gateway.drain(settings.shutdown_grace_s)
            await runtime.shutdown(grace_s=0)
            # Idle pre-started run-code children: killed and reaped, never orphaned.
            await runs_code.aclose()
            await monitor.stop()
            if lock is not None:
                lock.release()

    app = FastAPI(
        title="runyard",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # Served by web.routes.schema, behind a token; no open HTML viewers.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app, settings)
    install_auth(app, authenticator)
    dashboard.install_dashboard(app)
    app.include_router(ops.router)
    app.include_router(feed.router)  # before runs: /runs/feed is not a run id
    app.include_router(runs.router)
    app.include_router(stream.router)
    app.include_router(run_code.router)
    app.include_router(schema.router)
    return app
