"""Shared fixtures: the CouchDB-compatible server (plugin) and live runyard servers."""

from __future__ import annotations

pytest_plugins = ["tests.couchdb_fixtures", "tests.live_server"]
