"""The floor of the HTTP figure (``bench.http``): a bare Starlette endpoint that does
one SQLite INSERT + COMMIT (WAL, ``synchronous=FULL``) per request.

Run by uvicorn in a subprocess with the same settings as ``sessiond serve`` (one
process, the default loop and HTTP implementation, no access log):

    HTTP_FLOOR_DB=/path/floor.db python -m uvicorn bench.http_floor:app --port P

``POST /insert/{sid}`` takes the same JSON body a message takes (``{"content": ...}``),
stores ``{role, content}`` in an openai-agents-style ``agent_messages`` row and answers
a small JSON document. The write runs on a worker thread, one connection behind a lock
(SQLite has a single writer anyway), as a plain app would do it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.common import FLOOR_INSERT, FLOOR_SCHEMA, connect_floor, message_data

_connection = connect_floor(Path(os.environ.get("HTTP_FLOOR_DB", "floor.db")))
for _statement in FLOOR_SCHEMA:
    _connection.execute(_statement)
_lock = threading.Lock()


def _insert(session_id: str, content: str) -> int:
    with _lock:
        _connection.execute("BEGIN")
        cursor = _connection.execute(
            FLOOR_INSERT, (session_id, message_data("user", content))
        )
        _connection.execute("COMMIT")
        return int(cursor.lastrowid or 0)


async def insert(request: Request) -> JSONResponse:
    """One row, committed (fsynced) before the answer."""
    body = await request.json()
    row = await run_in_threadpool(
        _insert, request.path_params["sid"], str(body["content"])
    )
    return JSONResponse({"id": row, "session_id": request.path_params["sid"]})


async def health(request: Request) -> JSONResponse:
    """Readiness probe."""
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/insert/{sid}", insert, methods=["POST"]),
        Route("/v1/health", health),
    ]
)
