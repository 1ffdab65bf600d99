"""``create_app``: the composition root.

This is the one place that picks the store (SQLite by default, CouchDB when
``RUNYARD_COUCHDB_URL`` is set), starts the persistence actor and the
runtime, and mounts the routes.  Everything else receives what it needs.

A store that cannot be used at start-up does not stop the server (it serves,
``/readyz`` says why it is not ready, and everything works once the store
does), except for settings no retry can fix: :func:`probe_store` turns a
refusal of the CouchDB credentials into a :class:`ConfigError` that names
the setting, and ``runyard serve`` exits with it.  After shutdown,
``app.state.stop_report`` says whether acknowledged data could not be stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pykka
from fastapi import FastAPI

from runyard.actors.agents import AgentCatalog
from runyard.actors.clock import Clock
from runyard.actors.code.agent import make_code_agent
from runyard.actors.config import RuntimeConfig
from runyard.actors.context import AgentFactory
from runyard.actors.runtime import Runtime
from runyard.persistence.actor import PersistenceActor
from runyard.persistence.stop_report import StopReport
from runyard.persistence.store import RunStore
from runyard.persistence.store_errors import CredentialsRefused
from runyard.persistence.store_stats import StoreStats
from runyard.web.auth import Authenticator, install_auth
from runyard.web.config import ConfigError, Settings
from runyard.web.errors import install_error_handlers
from runyard.web.gateway import Gateway
from runyard.web.gc_tuning import tune_gc
from runyard.web.loop_monitor import LoopMonitor
from runyard.web.metrics import MetricsSources, OpenStreams, code_pool_of, metrics_registry
from runyard.web.node import DataDirLock, node_id
from runyard.web.routes import (
    api_docs,
    dashboard,
    feed,
    metrics,
    ops,
    run_code,
    runs,
    schema,
    stream,
)
from runyard.web.version import package_version

API_DESCRIPTION = """Durable, reconnectable agent runs.  Start a run and get its `run_id` at
once; follow it over SSE, leave, come back and resume exactly where you were;
stop it; find it after it finished.  Every endpoint needs a token
(`Authorization: Bearer <token>` or the session cookie from
`POST /auth/session`) except the few listed as open in docs/api.md
("Authentication": the probes, signing out, the dashboard's static files);
you only ever see your own runs."""

logger = logging.getLogger("runyard.app")

MIN_COUCH_IDLE_TIMEOUT_S = 2.0
"""A CouchDB request that hears nothing for the store timeout (but at least
this long) fails and is retried: a frozen server cannot hold the store thread."""


def build_store(settings: Settings) -> RunStore:
    if settings.couchdb_url:
        from runyard.persistence.couch_store import CouchStore

        return CouchStore(
            couchdb_url(settings),
            db=settings.couchdb_db,
            idle_timeout_s=max(settings.store_timeout_s, MIN_COUCH_IDLE_TIMEOUT_S),
        )
    from runyard.persistence.sqlite_store import SQLiteStore

    return SQLiteStore(settings.data_dir / "runs.sqlite3")


def build_cluster(settings: Settings, config: RuntimeConfig) -> pykka.ActorRef[Any] | None:
    """The cluster backend that lets several nodes share the CouchDB database
    (leases, the changes follower, stop requests); None on SQLite, which is
    single-node."""
    if not settings.couchdb_url:
        return None
    from runyard.persistence.couch_cluster import CouchCluster

    return CouchCluster.start(
        couchdb_url(settings),
        settings.couchdb_db,
        node_id=config.node_id,
        lease_s=config.lease_s,
        timeout_s=config.store_timeout_s,
        loop=asyncio.get_running_loop(),
    )


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


def probe_store(settings: Settings) -> str | None:
    """Open and close the configured store once, before serving.

    Returns None if it opened, else why not (the server serves anyway and
    keeps trying).  Raises :class:`ConfigError` if CouchDB refused the
    credentials: naming the settings and the user, never the password, and
    tried once only, since every failed login counts towards CouchDB's lockout.
    """
    store = build_store(settings)

    async def open_close() -> None:
        try:
            await store.open()
        finally:
            await store.close()

    try:
        asyncio.run(open_close())
    except CredentialsRefused as exc:
        raise ConfigError(credentials_message(settings, exc)) from None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def credentials_message(settings: Settings, exc: CredentialsRefused) -> str:
    if settings.couchdb_user is not None:
        where = f"RUNYARD_COUCHDB_USER={settings.couchdb_user!r} with RUNYARD_COUCHDB_PASSWORD"
    elif exc.user is not None:
        where = f"the user {exc.user!r} in RUNYARD_COUCHDB_URL"
    else:
        where = "RUNYARD_COUCHDB_URL without credentials (set RUNYARD_COUCHDB_USER/_PASSWORD)"
    return (
        f"CouchDB at {exc.server} (RUNYARD_COUCHDB_URL) refused {where}: {exc}. "
        "Fix the credentials and start again; runyard does not retry, because "
        "CouchDB locks a user out after a few failed logins."
    )


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
        report = StopReport()
        app.state.stop_report = report
        store_stats = StoreStats()
        persistence: pykka.ActorRef[Any] = PersistenceActor.start(
            the_store, stop_report=report, stats=store_stats
        )
        runs_code = code_agent or make_code_agent(settings.code_settings())
        config = settings.runtime_config(
            node_id=node_id(settings),
            write_window_s=the_store.commit_window_s,
            commit_gap_s=the_store.commit_gap_s,
        )
        runtime = Runtime(
            config,
            catalog=catalog,
            persistence=persistence,
            clock=clock,
            code_agent=runs_code,
            cluster=build_cluster(settings, config) if store is None else None,
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
        app.state.metrics = metrics_registry(
            MetricsSources(
                version=package_version(),
                node_id=config.node_id,
                runtime=runtime.stats,
                store=store_stats,
                loop=monitor,
                streams=app.state.open_streams,
                pool=code_pool_of(runs_code),
            )
        )
        try:
            yield
        finally:
            await gateway.drain(settings.shutdown_grace_s)
            await runtime.shutdown(grace_s=0)
            # Idle pre-started run-code children: killed and reaped, never orphaned.
            await runs_code.aclose()
            await monitor.stop()
            if report.lost:
                logger.error(
                    "%d run(s) whose writes were acknowledged could not be stored: %s",
                    len(report.unsaved),
                    report.error,
                )
            if lock is not None:
                lock.release()

    app = FastAPI(
        title="runyard",
        version=package_version(),
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # Served by runyard.web.routes.schema and runyard.web.routes.api_docs, behind a token.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.open_streams = OpenStreams()
    install_error_handlers(app, settings)
    # The run routes first: a request is matched against the routes in order,
    # and POST /runs is the hottest (behind eight other routers it spent
    # ~25 us per start on matching alone).
    app.include_router(feed.router)  # before runs: /runs/feed is not a run id
    app.include_router(runs.router)
    app.include_router(stream.router)
    install_auth(app, authenticator)
    dashboard.install_dashboard(app)
    app.include_router(ops.router)
    app.include_router(run_code.router)
    app.include_router(schema.router)
    app.include_router(api_docs.router)
    app.include_router(metrics.router)
    return app
