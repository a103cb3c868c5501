"""Benchmark durable ingest over loopback: /v1/batch, single /v1/track, bare JSON-parsing endpoints, ack-to-score.

Run: .venv/bin/python benchmarks/ingest.py [--seconds 10] [--connections 64]

The script starts the server (``upsignal serve``'s application plus one extra
endpoint, ``/bench/bare``, that only parses the JSON body and returns) in one
process and drives it from another, so client and server each have their own
interpreter. Every /v1/batch request carries 100 Segment track messages of
400-600 bytes with new random messageIds, so each one is synced to the ingest
log before its 200 comes back. After each durable phase the load generator
waits until the server has loaded every acknowledged event into DuckDB and
reports that time, so the rate the store keeps up with is visible too. Single
/v1/track calls are compared with single-message calls to the bare endpoint.
The ack-to-score phase sends a new account's events and polls the admin API
until that account's score reflects them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ADMIN_TOKEN = "benchmark-admin-token"
BARE_PATH = "/bench/bare"
EVENTS_PER_BATCH = 100


# -- server process -----------------------------------------------------------------------------------


def serve(db: str, port: int, live_scoring: bool) -> None:
    """Serve the upsignal app plus the bare endpoint until killed."""
    import uvicorn

    from upsignal.cli.serve import SWITCH_INTERVAL_SECONDS
    from upsignal.server import ServerOptions, create_app

    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    app = create_app(ServerOptions(db=db, live_scoring=live_scoring))
    ok = b'{"success":true}'

    async def with_bare_endpoint(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == BARE_PATH:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            orjson.loads(b"".join(chunks))
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"16")]})
            await send({"type": "http.response.body", "body": ok})
            return
        await app(scope, receive, send)

    uvicorn.run(with_bare_endpoint, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                lifespan="on")


# -- load generator process -----------------------------------------------------------------------------


def event_template(rng: random.Random, index: int) -> dict:
    """Build a track message of 400-600 bytes once serialised, with a messageId placeholder."""
    user = f"user-{rng.randint(1, 20_000)}"
    return {
        "type": "track",
        "event": rng.choice(["Report Run", "Query Run", "Project Created", "Invite Sent", "Dashboard Viewed"]),
        "userId": user,
        "anonymousId": str(uuid.UUID(int=rng.getrandbits(128))),
        "messageId": "@@ID@@",
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"report_id": f"r-{index}", "rows": rng.randint(1, 5000), "plan": "free",
                       "duration_ms": rng.randint(5, 900), "filter": "x" * rng.randint(0, 120)},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "10.1.2.3",
                    "groupId": f"acct-{rng.randint(1, 2000)}",
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0"},
    }


class BodyMaker:
    """Builds request bodies whose messageIds are all new, by filling a pre-serialised template."""

    def __init__(self, events: int, seed: int, batch: bool):
        rng = random.Random(seed)
        templates = [event_template(rng, index) for index in range(events)]
        self.sizes = [len(orjson.dumps(template)) for template in templates]
        if batch:
            text = orjson.dumps({"batch": templates, "sentAt": "2024-05-01T12:00:01.000Z"})
        else:
            text = orjson.dumps(templates[0])
        self.parts = text.split(b"@@ID@@")

    def next(self) -> bytes:
        """Return a body whose messageIds are random 32-digit hex strings, spread like the SDKs' UUIDs."""
        ids = os.urandom(16 * (len(self.parts) - 1)).hex().encode()
        pieces = [self.parts[0]]
        for index, part in enumerate(self.parts[1:]):
            pieces.append(ids[32 * index: 32 * index + 32])
            pieces.append(part)
        return b"".join(pieces)


async def run_connection(port: int, path: str, key: str, maker: BodyMaker, deadline: float,
                         latencies: list[float], failures: list[int]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = "Basic " + __import__("base64").b64encode(f"{key}:".encode()).decode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: {auth}\r\n"
    done = 0
    while time.perf_counter() < deadline:
        body = maker.next()
        started = time.perf_counter()
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_and_headers = await reader.readuntil(b"\r\n\r\n")
        start = status_and_headers.lower().index(b"content-length:") + 15
        length = int(status_and_headers[start:status_and_headers.index(b"\r\n", start)])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        status = int(status_and_headers[9:12])
        if status == 200:
            done += 1
        else:
            failures.append(status)
    writer.close()
    return done


async def drive(port: int, path: str, key: str, seconds: float, connections: int, batch: bool) -> dict:
    makers = [BodyMaker(EVENTS_PER_BATCH if batch else 1, seed, batch) for seed in range(connections)]
    latencies: list[float] = []
    failures: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    done = await asyncio.gather(*[run_connection(port, path, key, maker, deadline, latencies, failures)
                                  for maker in makers])
    elapsed = time.perf_counter() - started
    latencies.sort()
    requests = sum(done)
    sizes = makers[0].sizes
    return {
        "path": path, "seconds": round(elapsed, 2), "connections": connections,
        "requests_per_second": round(requests / elapsed),
        "events_per_second": round(requests * (EVENTS_PER_BATCH if batch else 1) / elapsed),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
        "failed_requests": len(failures), "failed_statuses": sorted(set(failures)),
        "event_bytes_min": min(sizes), "event_bytes_max": max(sizes),
    }


def validation_cost(bodies: int = 300) -> float:
    """Return the CPU microseconds per event of checking /v1/batch bodies as the server does, without HTTP.

    It shows how fast this machine runs the server's Python code at the moment of the run, which
    varies when other processes share the CPUs.
    """
    from datetime import timedelta

    from upsignal.events.schema import utc_now
    from upsignal.server.ingest import check_request

    maker = BodyMaker(EVENTS_PER_BATCH, 0, batch=True)
    samples = [maker.next() for _ in range(bodies)]
    started = time.thread_time()
    for body in samples:
        check_request(body, "batch", utc_now(), timedelta(hours=1))
    return round((time.thread_time() - started) / (bodies * EVENTS_PER_BATCH) * 1e6, 2)


def wait_until_loaded(port: int, phase: dict) -> dict:
    """Wait until the server has loaded every acknowledged event; add the backlog and the load rate to ``phase``."""
    import httpx

    started = time.perf_counter()
    pending_at_end = None
    while True:
        pending = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).json()["events_pending_load"]
        pending_at_end = pending if pending_at_end is None else pending_at_end
        if pending == 0:
            break
        if time.perf_counter() - started > 600:
            raise TimeoutError(f"the server still had {pending:,} events to load after 600 s")
        time.sleep(0.05)
    drain = time.perf_counter() - started
    acknowledged = phase["events_per_second"] * phase["seconds"]
    phase.update(pending_load_at_end=pending_at_end, drain_seconds=round(drain, 2),
                 loaded_per_second=round(acknowledged / (phase["seconds"] + drain)))
    return phase


class CpuMeter:
    """Measures the CPU share of the server, its row builder, this load generator and every other process.

    The row builder is the server's child process. Other processes matter
    because the benchmark machine may be shared: their share is CPU time the
    server could not use.
    """

    def __init__(self, server_pid: int):
        self.server_pid = server_pid
        self.ticks_per_second = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> CpuMeter:
        self.start = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        end = self._sample()
        machine, idle, server, builder, client, wall = (after - before for after, before in zip(end, self.start))
        cpus = os.cpu_count() or 1
        self.figures = {
            "server_cpu_percent": round(server / self.ticks_per_second / wall * 100),
            "builder_cpu_percent": round(builder / self.ticks_per_second / wall * 100),
            "load_generator_cpu_percent": round(client / self.ticks_per_second / wall * 100),
            "other_cpu_percent": round(((machine - idle) / machine * cpus * 100)
                                       - (server + builder + client) / self.ticks_per_second / wall * 100),
        }

    def _sample(self) -> tuple[int, int, int, int, int, float]:
        with open("/proc/stat") as handle:
            ticks = [int(value) for value in handle.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4], self._process_ticks(self.server_pid), \
            sum(self._process_ticks(child) for child in self._children(self.server_pid)), \
            self._process_ticks(os.getpid()), time.monotonic()

    @staticmethod
    def _children(pid: int) -> list[int]:
        """Return the child processes that any thread of ``pid`` started: the row builder."""
        children = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(child) for child in (task / "children").read_text().split()]
        return children

    @staticmethod
    def _process_ticks(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except FileNotFoundError:  # a child that exited between listing and reading
            return 0
        return int(fields[11]) + int(fields[12])


def measure(meter: CpuMeter, port: int, path: str, key: str, seconds: float, connections: int,
            batch: bool) -> dict:
    import uvloop

    with meter:
        phase = uvloop.run(drive(port, path, key, seconds, connections, batch))
    phase.update(meter.figures)
    return phase


def load(port: int, key: str, seconds: float, connections: int, server_pid: int) -> None:
    """Run the throughput phases and print their results as JSON."""
    meter = CpuMeter(server_pid)
    results = {"bare_batch": measure(meter, port, BARE_PATH, key, seconds, connections, batch=True)}
    results["durable_batch"] = wait_until_loaded(
        port, measure(meter, port, "/v1/batch", key, seconds, connections, batch=True))
    results["bare_single"] = measure(meter, port, BARE_PATH, key, seconds, connections * 4, batch=False)
    results["single_track"] = wait_until_loaded(
        port, measure(meter, port, "/v1/track", key, seconds, connections * 4, batch=False))
    print(json.dumps(results))


# -- ack-to-score latency -------------------------------------------------------------------------------


def ack_to_score(url: str, key: str, samples: int) -> dict:
    """Send a new account's events, then poll until its score counts them; return latency percentiles."""
    import httpx

    seconds = []
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(timeout=30) as client:
        for sample in range(samples):
            domain = f"latency-{uuid.uuid4().hex[:10]}.io"
            messages = [{"type": "identify", "userId": f"lat-{sample}", "traits": {"email": f"a@{domain}"},
                         "messageId": str(uuid.uuid4())}]
            messages += [{"type": "track", "userId": f"lat-{sample}", "event": "Report Run",
                          "messageId": str(uuid.uuid4())} for _ in range(10)]
            response = client.post(f"{url}/v1/batch", json={"batch": messages}, auth=(key, ""))
            acknowledged = time.perf_counter()
            response.raise_for_status()
            while True:
                account = client.get(f"{url}/api/accounts/{domain}", headers=admin)
                if account.status_code == 200 and account.json()["signals"].get("reports_run") == 10:
                    break
                if time.perf_counter() - acknowledged > 60:
                    raise TimeoutError(f"account {domain} was not scored within 60 s")
                time.sleep(0.05)
            seconds.append(time.perf_counter() - acknowledged)
            time.sleep(random.uniform(0, 1.0))
    seconds.sort()
    return {"samples": samples, "p50_s": round(seconds[len(seconds) // 2], 2),
            "p95_s": round(seconds[int(len(seconds) * 0.95)], 2), "max_s": round(seconds[-1], 2)}


# -- orchestration -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the benchmark server exited during startup")
        try:
            httpx.get(url + "/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError("the benchmark server did not start within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each throughput phase")
    parser.add_argument("--connections", type=int, default=64, help="Concurrent connections for /v1/batch")
    parser.add_argument("--latency-samples", type=int, default=40, help="Accounts timed from ack to score")
    parser.add_argument("--no-live-scoring", action="store_true", help="Run the server without live scoring")
    parser.add_argument("--serve", nargs=2, metavar=("DB", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=3, metavar=("PORT", "KEY", "SERVER_PID"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), not args.no_live_scoring)
        return
    if args.load:
        load(int(args.load[0]), args.load[1], args.seconds, args.connections, int(args.load[2]))
        return

    from upsignal.server.keys import create_key
    from upsignal.store import Store

    validation_before = validation_cost()
    workdir = Path(tempfile.mkdtemp(prefix="upsignal-ingest-bench-"))
    db = workdir / "bench.duckdb"
    with Store(db) as store:
        _, key = create_key(store, "benchmark")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "UPSIGNAL_ADMIN_TOKEN": ADMIN_TOKEN}
    live = ["--no-live-scoring"] if args.no_live_scoring else []
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(db), str(port), *live], env=env)
    try:
        wait_until_up(url, server)
        output = subprocess.run(
            [sys.executable, __file__, "--load", str(port), key, str(server.pid), "--seconds", str(args.seconds),
             "--connections", str(args.connections)],
            check=True, capture_output=True, text=True,
        ).stdout
        results = json.loads(output)
        results["ack_to_score"] = None if args.no_live_scoring else ack_to_score(url, key, args.latency_samples)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    with Store(db, read_only=True) as store:
        results["events_in_store"] = store.scalar("SELECT count(*) FROM events")
    results["cpus"] = os.cpu_count()
    results["validation_us_per_event"] = [validation_before, validation_cost()]
    report(results)


def report(results: dict) -> None:
    bare, durable = results["bare_batch"], results["durable_batch"]
    bare_single, single = results["bare_single"], results["single_track"]
    before, after = results["validation_us_per_event"]
    print(f"cpus: {results['cpus']}, events stored in total: {results['events_in_store']:,}; the server's check"
          f" alone, before and after the run: {before} and {after} us of CPU per event")
    for name, phase in (("bare parse  /bench/bare (batch) ", bare), ("durable     /v1/batch          ", durable),
                        ("bare parse  /bench/bare (single)", bare_single),
                        ("durable     /v1/track          ", single)):
        print(f"{name}: {phase['events_per_second']:>9,} events/s ({phase['requests_per_second']:,} req/s),"
              f" p50 {phase['p50_ms']} ms, p99 {phase['p99_ms']} ms, {phase['failed_requests']} failed"
              f" {phase['failed_statuses']}; CPU: server {phase['server_cpu_percent']}%, its row builder"
              f" {phase['builder_cpu_percent']}%, load generator {phase['load_generator_cpu_percent']}%,"
              f" other processes {phase['other_cpu_percent']}%")
        if "drain_seconds" in phase:
            print(f"    {phase['pending_load_at_end']:,} events still to load at the end, loaded"
                  f" {phase['drain_seconds']} s later: {phase['loaded_per_second']:,} events/s into DuckDB")
    print(f"durable / bare, /v1/batch: {durable['events_per_second'] / bare['events_per_second'] * 100:.0f}%;"
          f" /v1/track: {single['requests_per_second'] / bare_single['requests_per_second'] * 100:.0f}%")
    latency = results["ack_to_score"]
    if latency is None:
        print("ack to updated score: not measured (live scoring off)")
    else:
        print(f"ack to updated score: p50 {latency['p50_s']} s, p95 {latency['p95_s']} s, max {latency['max_s']} s"
              f" over {latency['samples']} accounts")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
