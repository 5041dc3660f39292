"""Client processes of ``bench.http``: a load generator and SSE subscribers.

They speak HTTP/1.1 over plain asyncio streams (keep-alive, one request at a time
per connection), which costs far less CPU per request than httpx, so that on a
two-core machine the client process does not starve the server it measures. Each
runs in its own process, started by ``bench.http``:

    python -m bench.http_clients load PORT PATH_TEMPLATE SIDS WARMUP SECONDS OUT
    python -m bench.http_clients subscribe PORT SIDS CONNECTIONS AFTER OUT

``load`` keeps one connection per session id busy with blocking ``POST``s for
``WARMUP + SECONDS`` seconds and writes the count and latencies of the requests that
started after the warm-up. ``subscribe`` opens ``CONNECTIONS`` SSE streams (round robin
over the session ids), prints ``READY`` once every stream has its headers, records
when each event (by SSE ``id``) arrived on each stream, and on ``STOP`` (a line on
stdin) writes what it saw. Time stamps are ``time.monotonic()`` (CLOCK_MONOTONIC,
system-wide), comparable with the parent's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

HOST = "127.0.0.1"
CONNECT_AT_ONCE = 50


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, bytes(body)
            body += chunk[:-2]
    return status, b""


def post(path: str, body: bytes) -> bytes:
    """The bytes of a keep-alive JSON POST."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- load


async def load(
    port: int, template: str, sids: list[str], warmup: float, seconds: float
) -> dict[str, Any]:
    """Closed-loop blocking requests, one connection per session."""
    body = json.dumps({"content": "x" * 200}).encode()
    start = time.monotonic()
    measure_from = start + warmup
    end = measure_from + seconds
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def client(sid: str) -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        request = post(template.format(sid=sid), body)
        try:
            while True:
                began = time.monotonic()
                if began >= end:
                    return
                writer.write(request)
                status, _ = await read_response(reader)
                done = time.monotonic()
                if began >= measure_from and done <= end:
                    if status in (200, 201):
                        latencies.append(done - began)
                    else:
                        errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(client(sid) for sid in sids))
    return {"seconds": seconds, "latencies": latencies, "errors": errors}


# --- subscribers


async def subscribe(
    port: int, sids: list[str], connections: int, after: int
) -> dict[str, Any]:
    """SSE streams until STOP on stdin; when each event id arrived on each."""
    arrivals: dict[int, list[float]] = {}
    types: dict[str, int] = {}
    frames = [0]
    failures: list[str] = []
    opened = [0]
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    all_open = asyncio.Event()
    stop = asyncio.Event()

    async def stream(sid: str) -> None:
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(
                    (
                        f"GET /v1/sessions/{sid}/events?after={after} HTTP/1.1\r\n"
                        f"Host: {HOST}\r\nAccept: text/event-stream\r\n\r\n"
                    ).encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError) as error:
                failures.append(repr(error))
                opened[0] += 1
                if opened[0] == connections:
                    all_open.set()
                return
        status = int(head.split()[1])
        opened[0] += 1
        if opened[0] == connections:
            all_open.set()
        if status != 200:
            failures.append(f"status {status}")
            writer.close()
            return
        pending = b""
        try:
            while True:
                size = int((await reader.readline()).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                now = time.monotonic()
                if size == 0:
                    return
                pending += chunk[:-2]
                while b"\n\n" in pending:
                    text, pending = pending.split(b"\n\n", 1)
                    frames[0] += 1
                    offset = None
                    kind = ""
                    for line in text.split(b"\n"):
                        if line.startswith(b"id:"):
                            offset = int(line[3:].strip())
                        elif line.startswith(b"event:"):
                            kind = line[6:].strip().decode()
                    types[kind] = types.get(kind, 0) + 1
                    if offset is not None:
                        arrivals.setdefault(offset, []).append(now)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    tasks = [
        asyncio.create_task(stream(sids[i % len(sids)])) for i in range(connections)
    ]
    await asyncio.wait_for(all_open.wait(), timeout=120)
    print("READY", len(failures), flush=True)
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "arrivals": {str(k): v for k, v in arrivals.items()},
        "types": types,
        "frames": frames[0],
        "failures": failures[:20],
        "n_failures": len(failures),
    }


def main(argv: list[str]) -> int:
    """Dispatch ``load`` / ``subscribe``; the result goes to the OUT file as JSON."""
    kind, port = argv[0], int(argv[1])
    if kind == "load":
        template, sids = argv[2], argv[3].split(",")
        result = asyncio.run(load(port, template, sids, float(argv[4]), float(argv[5])))
        out = argv[6]
    else:
        sids, connections, after = argv[2].split(","), int(argv[3]), int(argv[4])
        result = asyncio.run(subscribe(port, sids, connections, after))
        out = argv[5]
    with open(out, "w") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
