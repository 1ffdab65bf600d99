"""A CouchStore's database as CouchDB holds it, read over plain HTTP.

So a test checks the document layout itself (run docs, event chunks, parts)
and not only what the store reads back through its own code.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


def all_docs(http: httpx.Client, db: str) -> list[dict[str, Any]]:
    """Every document of ``db`` but the design docs (the Mango indexes)."""
    rows = http.get(f"/{db}/_all_docs", params={"include_docs": "true"}).json()["rows"]
    return [row["doc"] for row in rows if not row["id"].startswith("_design/")]


def docs_of(http: httpx.Client, db: str, run_id: str) -> dict[str, dict[str, Any]]:
    """The live documents of one run (its run doc, chunks and parts), by id."""
    params = {
        "include_docs": "true",
        "startkey": json.dumps(run_id),
        "endkey": json.dumps(f"{run_id}:\ufff0"),
    }
    rows = http.get(f"/{db}/_all_docs", params=params).json()["rows"]
    return {row["id"]: row["doc"] for row in rows}


def encoded_size(doc: dict[str, Any]) -> int:
    """Bytes of ``doc`` as JSON on the wire: what ``chunk_bytes`` bounds."""
    return len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())
