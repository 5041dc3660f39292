"""Figure group "http": the native API over real HTTP (issue 3).

Every server runs in its own process under uvicorn (one process, the default asyncio
loop and h11, no access log: what ``sessiond serve`` runs); every client runs in
separate processes (``bench.http_clients``: HTTP/1.1 over plain asyncio streams,
keep-alive, far cheaper per request than httpx), all on 127.0.0.1.

h1. Blocking message round trip: 32 clients, one session each, each keeps one
    ``POST /v1/sessions/{id}/messages`` (JSON, echo agent; waits for the reply) in
    flight. Floor: a bare Starlette endpoint on the same stack (``bench.http_floor``)
    that parses the same JSON body and does one SQLite INSERT + COMMIT (WAL,
    ``synchronous=FULL``) per request, driven by the same load generator. Interleaved
    rounds, median throughput, pooled p50/p99 latencies. Target >= 0.5x.

h2. SSE fan-out: 500 subscribers (two client processes) on one session's live tail
    (``GET /v1/sessions/{id}/events``, ``Accept: text/event-stream``) while 50 appends
    a second (``POST .../messages?wait=false``, each starts an echo turn) flow. The
    appends are ``role: assistant`` messages, which start no agent turn (one
    event each on the tail; with ``user`` messages every append also streams the
    echo turn's deltas, ~9 frames each). The delay is from the moment the append's
    202 was read to the arrival of the
    appended message's event (matched by SSE ``id``) at each subscriber. Floor: the
    same with one subscriber. Target: p99 <= 50 ms.

h3. Idle streams: 1,000 SSE streams, one on each of 1,000 sessions with no traffic;
    the server's CPU time (utime + stime of the process, ``/proc/<pid>/stat``) over
    20 s. Floor: the same server, same sessions, no streams, same window. Target: < 2%
    of one core.

The stream figures run the production app with the per-principal stream cap (64 by
default) raised (``bench.http_app``); nothing else differs from ``sessiond serve``.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    REPO,
    Options,
    Result,
    interleaved,
    main,
    median,
    paired_ratio,
    say,
    scratch,
)
from bench.http_clients import post, read_response
from tests.support.server import ServerProcess, free_port

CLIENTS = 32
SUBSCRIBERS = 500
APPENDS_PER_SECOND = 50
IDLE_STREAMS = 1000
TICK = os.sysconf("SC_CLK_TCK")
# h2's appends: a message that starts no agent turn (only role "user" does), so each
# append is one event on the tail
ROLE = "assistant"


@dataclass
class BoundResult(Result):
    """A line whose target bounds the measured value itself (not the ratio)."""

    bound: float = 0.0

    @property
    def met(self) -> bool | None:
        """Whether the measured value is within the bound."""
        return self.measured <= self.bound


# --- helpers


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def environment() -> dict[str, str]:
    """The environment of the child processes."""
    ambient = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SESSIOND_", "SESSION_"))
    }
    return {**ambient, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


class FloorServer:
    """``bench.http_floor`` under uvicorn, in a subprocess."""

    def __init__(self, db: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.http_floor:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-server-header",
                "--timeout-graceful-shutdown",
                "5",
            ],
            cwd=REPO,
            env={**environment(), "HTTP_FLOOR_DB": str(db)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get(f"{self.url}/v1/health").status_code == 200:
                        return
                except httpx.TransportError:
                    time.sleep(0.05)  # bounded readiness poll
        self.stop()
        raise TimeoutError("the floor server did not start")

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then kill after a bounded wait."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        self.log.close()


def create_sessions(url: str, count: int, prefix: str) -> list[str]:
    """``count`` echo sessions with caller-chosen ids."""
    ids = []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for i in range(count):
            response = client.post(
                "/v1/sessions",
                json={"agent_id": "echo", "session_id": f"{prefix}-{i:05d}"},
            )
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def run_client(args: list[str], timeout: float) -> dict[str, Any]:
    """Run a ``bench.http_clients`` process to completion; its JSON result."""
    out = Path(args[-1])
    subprocess.run(
        [sys.executable, "-m", "bench.http_clients", *args],
        cwd=REPO,
        env=environment(),
        check=True,
        timeout=timeout,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


class Subscribers:
    """A ``bench.http_clients subscribe`` process holding SSE streams."""

    def __init__(
        self, port: int, sids: list[str], connections: int, after: int, out: Path
    ) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.http_clients",
                "subscribe",
                str(port),
                ",".join(sids),
                str(connections),
                str(after),
                str(out),
            ],
            cwd=REPO,
            env=environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def wait_ready(self, timeout: float = 150.0) -> int:
        """Block until every stream is open; how many failed to open."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("the subscribers did not connect in time")
        line = self.process.stdout.readline().decode().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"subscriber process said {line!r}")
        return int(line[1])

    def stop(self) -> dict[str, Any]:
        """Close the streams; what the process saw."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"STOP\n")
        self.process.stdin.flush()
        self.process.wait(timeout=60)
        result: dict[str, Any] = json.loads(self.out.read_text())
        self.out.unlink()
        return result

    def kill(self) -> None:
        """Make sure it is gone."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)


# --- h1: blocking round trip


def round_trip(options: Options, base: Path) -> list[Result]:
    """Blocking message round trip, 32 clients, vs the bare INSERT endpoint."""
    warmup = options.pick(1.0, 0.5)
    seconds = options.pick(6.0, 2.0)
    rounds = options.n_rounds(5, 2)
    say(
        f"h1: blocking round trip, {CLIENTS} clients, {rounds} rounds of "
        f"{seconds:.0f} s (+{warmup:.1f} s warm-up) each"
    )
    floor = FloorServer(base / "floor.db", base / "floor.log")
    server = ServerProcess(base / "h1.db", log=base / "h1.log")
    try:
        server.start()
        sids = create_sessions(server.url, CLIENTS, "h1")
        latencies: dict[str, list[float]] = {"floor": [], "sessiond": []}
        errors: dict[str, dict[str, int]] = {"floor": {}, "sessiond": {}}
        server_cpu: dict[str, list[float]] = {"floor": [], "sessiond": []}
        client_cpu: dict[str, list[float]] = {"floor": [], "sessiond": []}

        def measure(name: str, port: int, template: str, pid: int) -> float:
            cpu_before, client_before = cpu_seconds(pid), children_cpu()
            result = run_client(
                [
                    "load",
                    str(port),
                    template,
                    ",".join(sids),
                    str(warmup),
                    str(seconds),
                    str(base / f"load-{name}.json"),
                ],
                timeout=warmup + seconds + 120,
            )
            wall = warmup + seconds
            server_cpu[name].append((cpu_seconds(pid) - cpu_before) / wall)
            client_cpu[name].append((children_cpu() - client_before) / wall)
            latencies[name].extend(result["latencies"])
            for code, count in result["errors"].items():
                errors[name][code] = errors[name].get(code, 0) + count
            return len(result["latencies"]) / seconds

        found = interleaved(
            rounds,
            {
                "floor": lambda: measure(
                    "floor", floor.port, "/insert/{sid}", floor.process.pid
                ),
                "sessiond": lambda: measure(
                    "sessiond", server.port, "/v1/sessions/{sid}/messages", server.pid
                ),
            },
        )
    finally:
        server.stop()
        floor.stop()
    measured, floored = median(found["sessiond"]), median(found["floor"])
    notes = []
    for name in ("sessiond", "floor"):
        lat = latencies[name]
        notes.append(
            f"{name}: {', '.join(f'{x:,.0f}' for x in found[name])} req/s; "
            f"latency p50 {percentile(lat, 0.5) * 1e3:.1f} ms, "
            f"p99 {percentile(lat, 0.99) * 1e3:.1f} ms ({len(lat):,} requests); "
            f"server CPU {median(server_cpu[name]) * 100:.0f}% of a core, "
            f"load generator {median(client_cpu[name]) * 100:.0f}%"
            + (f"; errors {errors[name]}" if errors[name] else "")
        )
    return [
        Result(
            "h1",
            f"blocking message round trip, {CLIENTS} clients (echo)",
            measured,
            floored,
            "msg/s",
            paired_ratio(found["sessiond"], found["floor"]),
            ">= 0.5",
            notes,
        )
    ]


# --- h2: SSE fan-out


async def append_paced(
    port: int, sid: str, rate: float, seconds: float, connections: int = 8
) -> list[tuple[int, float, float]]:
    """``POST .../messages?wait=false`` at ``rate`` a second (open loop) for
    ``seconds``; (offset, sent, acknowledged) of each."""
    pool: asyncio.Queue[Any] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    body = json.dumps({"content": "fan-out " + "x" * 192, "role": ROLE}).encode()
    request = post(f"/v1/sessions/{sid}/messages?wait=false", body)
    acks: list[tuple[int, float, float]] = []

    async def one() -> None:
        reader, writer = await pool.get()
        try:
            sent = time.monotonic()
            writer.write(request)
            status, payload = await read_response(reader)
            acked = time.monotonic()
        finally:
            pool.put_nowait((reader, writer))
        if status == 202:
            document = json.loads(payload)
            message = document.get("user_message", document)
            acks.append((int(message["offset"]), sent, acked))

    start = time.monotonic()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 120)
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    return acks


def fan_out_once(
    server: ServerProcess, sid: str, subscribers: int, seconds: float, base: Path
) -> dict[str, Any]:
    """One fan-out run: ``subscribers`` streams, appends for ``seconds``."""
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        after = int(client.get(f"/v1/sessions/{sid}").json()["offset"])
    per_process = [subscribers // 2, subscribers - subscribers // 2]
    groups = [
        Subscribers(server.port, [sid], n, after, base / f"sub-{i}.json")
        for i, n in enumerate(per_process)
        if n
    ]
    try:
        failed = sum(group.wait_ready() for group in groups)
        time.sleep(0.5)
        cpu_before = cpu_seconds(server.pid)
        started = time.monotonic()
        acks = asyncio.run(append_paced(server.port, sid, APPENDS_PER_SECOND, seconds))
        appending = time.monotonic() - started
        # let the last deliveries arrive: until the server goes quiet (< 20% of a
        # core over a second), at most 60 s
        drain_end = time.monotonic() + 60
        while time.monotonic() < drain_end:
            before = cpu_seconds(server.pid)
            time.sleep(1.0)
            if cpu_seconds(server.pid) - before < 0.2:
                break
        cpu = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - started)
        seen = [group.stop() for group in groups]
    finally:
        for group in groups:
            group.kill()
    delays: list[float] = []
    early = 0
    for offset, _, acked in acks:
        for result in seen:
            for arrived in result["arrivals"].get(str(offset), []):
                if arrived < acked:
                    early += 1
                delays.append(max(0.0, arrived - acked))
    types: dict[str, int] = {}
    for result in seen:
        for kind, count in result["types"].items():
            types[kind] = types.get(kind, 0) + count
    return {
        "delays": delays,
        "expected": len(acks) * (subscribers - failed),
        "acks": acks,
        "ack_latency": [acked - sent for _, sent, acked in acks],
        "rate": len(acks) / appending,
        "failed": failed,
        "early": early,
        "types": types,
        "cpu": cpu,
    }


def fan_out(options: Options, base: Path) -> list[Result]:
    """500 SSE subscribers on one session, 50 appends a second."""
    seconds = options.pick(10.0, 4.0)
    floor_seconds = options.pick(5.0, 3.0)
    say(
        f"h2: SSE fan-out, {SUBSCRIBERS} subscribers, {APPENDS_PER_SECOND} appends/s "
        f"for {seconds:.0f} s (floor: 1 subscriber, {floor_seconds:.0f} s)"
    )
    server = ServerProcess(
        base / "h2.db", log=base / "h2.log", factory="bench.http_app:create"
    )
    try:
        server.start()
        sid = create_sessions(server.url, 1, "h2")[0]
        alone = fan_out_once(server, sid, 1, floor_seconds, base)
        many = fan_out_once(server, sid, SUBSCRIBERS, seconds, base)
    finally:
        server.stop()
    notes = []
    for name, run_ in (("500 subscribers", many), ("1 subscriber", alone)):
        d = run_["delays"]
        notes.append(
            f"{name}: delay p50 {percentile(d, 0.5) * 1e3:.1f} ms, p99 "
            f"{percentile(d, 0.99) * 1e3:.1f} ms, "
            f"max {max(d, default=0) * 1e3:.1f} ms; "
            f"delivered {len(d):,} of {run_['expected']:,} expected "
            f"({run_['early']} before the ack was read); appends at "
            f"{run_['rate']:.1f}/s, ack p50 "
            f"{percentile(run_['ack_latency'], 0.5) * 1e3:.1f} "
            f"ms p99 {percentile(run_['ack_latency'], 0.99) * 1e3:.1f} ms; server CPU "
            f"{run_['cpu'] * 100:.0f}% of a core"
            + (f"; {run_['failed']} streams failed to open" if run_["failed"] else "")
        )
    total_frames = sum(many["types"].values())
    notes.append(
        "frames per subscriber per append (500 run): "
        + ", ".join(
            f"{kind} {count / max(1, SUBSCRIBERS * len(many['acks'])):.2f}"
            for kind, count in sorted(many["types"].items())
        )
        + f" ({total_frames:,} frames in all)"
    )
    p99, floor_p99 = percentile(many["delays"], 0.99), percentile(alone["delays"], 0.99)
    return [
        BoundResult(
            "h2",
            f"SSE fan-out p99 delay, {SUBSCRIBERS} subs, {APPENDS_PER_SECOND}/s",
            p99,
            floor_p99,
            "s",
            p99 / floor_p99 if floor_p99 else float("inf"),
            "p99 <= 50 ms",
            notes,
            bound=0.050,
        )
    ]


# --- h3: idle streams


def idle_streams(options: Options, base: Path) -> list[Result]:
    """CPU of the server holding 1,000 idle SSE streams, vs none."""
    window = options.pick(20.0, 5.0)
    streams = IDLE_STREAMS
    say(f"h3: {streams} idle SSE streams, server CPU over {window:.0f} s vs no streams")
    server = ServerProcess(
        base / "h3.db", log=base / "h3.log", factory="bench.http_app:create"
    )
    groups: list[Subscribers] = []
    try:
        server.start()
        sids = create_sessions(server.url, streams, "h3")
        time.sleep(5.0)

        def cpu_over(seconds: float) -> float:
            before, start = cpu_seconds(server.pid), time.monotonic()
            time.sleep(seconds)
            return (cpu_seconds(server.pid) - before) / (time.monotonic() - start)

        idle = cpu_over(window)
        half = streams // 2
        groups = [
            Subscribers(server.port, sids[:half], half, 0, base / "idle-0.json"),
            Subscribers(
                server.port, sids[half:], streams - half, 0, base / "idle-1.json"
            ),
        ]
        opening = time.monotonic()
        failed = sum(group.wait_ready() for group in groups)
        opened_in = time.monotonic() - opening
        time.sleep(2.0)
        held = cpu_over(window)
        seen = [group.stop() for group in groups]
    finally:
        for group in groups:
            group.kill()
        server.stop()
    frames = sum(result["frames"] for result in seen)
    types: dict[str, int] = {}
    for result in seen:
        for kind, count in result["types"].items():
            types[kind] = types.get(kind, 0) + count
    notes = [
        f"{streams - failed} of {streams} streams open (opened in {opened_in:.1f} s), "
        f"one per session; frames received while held: {frames} {types}; "
        f"server CPU {held * 100:.2f}% with streams, {idle * 100:.2f}% without, "
        f"over {window:.0f} s each"
    ]
    return [
        BoundResult(
            "h3",
            f"server CPU, {streams} idle SSE streams ({window:.0f} s)",
            held * 100,
            idle * 100,
            "% core",
            held / idle if idle else float("inf"),
            "< 2% core",
            notes,
            bound=2.0,
        )
    ]


def run(options: Options) -> list[Result]:
    """Measure the http figures."""
    results: list[Result] = []
    with scratch(options, "http") as base:
        results.extend(round_trip(options, base))
        results.extend(fan_out(options, base))
        results.extend(idle_streams(options, base))
    return results


if __name__ == "__main__":
    sys.exit(main(run, __doc__ or ""))
