"""runyard as the benchmarks serve it: ``runyard.web.app.create_app`` with the bench catalog.

``uvicorn --factory bench.runyard_app:create_app``; settings come from the
``RUNYARD_*`` environment exactly as with ``runyard serve``.  Plain uvicorn
serves both apps with the same options (``runyard serve`` adds only the
drain-on-signal wrapper, which the benchmarks never exercise).
"""

from __future__ import annotations

from fastapi import FastAPI

from bench.agents import bench_catalog


def create_app() -> FastAPI:
    from runyard.web.app import create_app as runyard_app

    return runyard_app(catalog=bench_catalog())
