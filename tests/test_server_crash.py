"""Durability: SIGKILL the server under load, in a log append and in a load; find every acknowledged event once."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import orjson
import pytest

from upsignal.server.keys import create_key
from upsignal.store import Store

KILLS = 4
SENDERS = 3
BATCH = 50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(db, port: int, project, fault: str = "") -> subprocess.Popen:
    """Start ``upsignal serve`` in a new process, after running ``fault`` (Python code that patches it)."""
    command = [sys.executable, "-c", f"{fault}\nfrom upsignal.cli import main; main()", "serve", "--db", str(db),
               "--port", str(port)]
    env = {**os.environ, "UPSIGNAL_PROJECT": str(project)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited during startup: {process.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise TimeoutError("the server did not start within 60 s")


class Sender(threading.Thread):
    """Posts batches of new events until stopped, keeping the messageIds of acknowledged batches."""

    def __init__(self, url: str, key: str):
        super().__init__(daemon=True)
        self.url = url
        self.headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
        self.acknowledged: list[str] = []
        self.last_batch: bytes | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stopped.is_set():
                ids = [str(uuid.uuid4()) for _ in range(BATCH)]
                batch = [{"type": "track", "event": "Report Run", "userId": f"u{i % 17}", "messageId": message_id,
                          "properties": {"i": i}} for i, message_id in enumerate(ids)]
                body = orjson.dumps({"batch": batch})
                try:
                    response = client.post(self.url + "/v1/batch", content=body, headers=self.headers)
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                if response.status_code == 200:
                    self.acknowledged.extend(ids)
                    self.last_batch = body


@pytest.mark.slow
def test_killed_server_keeps_acknowledged_events(tmp_path):
    db, project = tmp_path / "crash.duckdb", tmp_path / "upsignal.yaml"
    project.write_text("server:\n  scoring_interval_seconds: 0.3\n")
    with Store(db) as store:
        _, key = create_key(store, "crash-test")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    senders: list[Sender] = []
    rng_delays = [0.8, 1.5, 0.5, 2.0]

    for kill in range(KILLS):
        process = start_server(db, port, project)
        round_senders = [Sender(url, key) for _ in range(SENDERS)]
        for sender in round_senders:
            sender.start()
        time.sleep(rng_delays[kill % len(rng_delays)])
        process.send_signal(signal.SIGKILL)
        process.wait()
        for sender in round_senders:
            sender.stopped.set()
            sender.join()
        senders.extend(round_senders)

    acknowledged = [message_id for sender in senders for message_id in sender.acknowledged]
    assert len(acknowledged) > 1000, "too few batches were acknowledged to test anything"

    process = start_server(db, port, project)
    try:
        replay = next(sender.last_batch for sender in senders if sender.last_batch)
        headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
        assert httpx.post(url + "/v1/batch", content=replay, headers=headers).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)

    with Store(db, read_only=True) as store:
        store.conn.execute("CREATE TEMP TABLE acknowledged (message_id VARCHAR)")
        store.conn.executemany("INSERT INTO acknowledged VALUES (?)", [[i] for i in acknowledged])
        missing = store.scalar("SELECT count(*) FROM acknowledged WHERE message_id NOT IN (SELECT message_id FROM events)")
        total = store.scalar("SELECT count(*) FROM events")
        distinct = store.scalar("SELECT count(DISTINCT message_id) FROM events")
    assert len(set(acknowledged)) == len(acknowledged)
    assert missing == 0
    assert total == distinct
    assert total >= len(acknowledged)


# Patches for the server process: stop for good halfway through the third append to the ingest log, or
# inside the first load transaction after its INSERT. Each creates the file MARKER when it stops.
PAUSE_IN_APPEND = """
import pathlib, time
from upsignal.server import ingest_log
real_write_all, appends = ingest_log._write_all, []
def torn_write_all(fd, header, payload):
    appends.append(len(payload))
    if len(appends) == 3:
        real_write_all(fd, header, payload[:len(payload) // 2])
        pathlib.Path(MARKER).touch()
        time.sleep(600)
    real_write_all(fd, header, payload)
ingest_log._write_all = torn_write_all
"""
PAUSE_IN_LOAD = """
import pathlib, time
from upsignal.server import loader
real_queue_touched = loader._queue_touched
def paused_queue_touched(conn, events, seq):
    real_queue_touched(conn, events, seq)
    pathlib.Path(MARKER).touch()
    time.sleep(600)
loader._queue_touched = paused_queue_touched
"""


def new_batch() -> bytes:
    return orjson.dumps({"batch": [{"type": "track", "event": "Report Run", "userId": f"u{i}",
                                    "messageId": str(uuid.uuid4())} for i in range(BATCH)]})


def stats(db) -> dict:
    """Run ``upsignal stats --json``, a read-only command, in a new process."""
    command = [sys.executable, "-c", "from upsignal.cli import main; main()", "stats", "--json", "--db", str(db)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def kill_when_marked(process: subprocess.Popen, marker) -> None:
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the server never reached the patched step"
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.fixture
def crash_store(tmp_path):
    db, project = tmp_path / "crash.duckdb", tmp_path / "upsignal.yaml"
    project.write_text("server:\n  scoring_interval_seconds: 0.3\n")
    with Store(db) as store:
        _, key = create_key(store, "crash-test")
    headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    return db, project, headers


@pytest.mark.slow
def test_kill_during_append_loses_only_unacknowledged(crash_store, tmp_path):
    db, project, headers = crash_store
    marker, port = tmp_path / "paused", free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(db, port, project, f"MARKER = {str(marker)!r}\n{PAUSE_IN_APPEND}")
    try:
        for _ in range(2):
            assert httpx.post(url + "/v1/batch", content=new_batch(), headers=headers).status_code == 200
        torn = new_batch()
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url + "/v1/batch", content=torn, headers=headers, timeout=3)
        kill_when_marked(process, marker)
    finally:
        process.kill()
        process.wait()

    after_kill = stats(db)
    assert after_kill["events"] == 2 * BATCH
    assert after_kill["duplicates"] == 0
    assert not any((tmp_path / "crash.duckdb.ingest").iterdir())

    process = start_server(db, port, project)
    try:
        assert httpx.post(url + "/v1/batch", content=torn, headers=headers).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert stats(db)["events"] == 3 * BATCH


@pytest.mark.slow
def test_kill_during_load_stores_each_event_once(crash_store, tmp_path):
    db, project, headers = crash_store
    marker, port = tmp_path / "paused", free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(db, port, project, f"MARKER = {str(marker)!r}\n{PAUSE_IN_LOAD}")
    try:
        for _ in range(3):
            assert httpx.post(url + "/v1/batch", content=new_batch(), headers=headers).status_code == 200
        kill_when_marked(process, marker)
    finally:
        process.kill()
        process.wait()

    after_kill = stats(db)
    assert after_kill["events"] == 3 * BATCH
    assert after_kill["duplicates"] == 0
    assert not any((tmp_path / "crash.duckdb.ingest").iterdir())
