"""A real ``stockq api`` (or ``stockq run``) process on a free loopback port, and the
HTTP helpers the security tests attack it with: ``http.client`` for ordinary requests
(it sends exactly the headers given, plus Host and Content-Length) and a raw socket for
bytes no client library would send."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from app.local_redis import free_port
from tests.conftest import EXAMPLES, ROOT
from tests.workers import WorkerProcess, wait_until, worker_env

GOOD_TOKEN = "9f2c1e7b4a6d8e0f3b5a7c9d1e3f5a7b"  # 32 characters, as the tests' secret


def sidecar_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a test sidecar: the example plugins, JSON logs."""
    return worker_env(redis_url, STOCKQ_PLUGINS=EXAMPLES, **extra)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Sidecar:
    process: WorkerProcess
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | str | None = None,
                **headers: str) -> Answer:
        """One request with exactly these headers (``Content_Type`` for Content-Type)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body,
                         headers={k.replace("_", "-"): v for k, v in headers.items()})
            resp = conn.getresponse()
            raw = resp.read()
            content_type = resp.headers.get("Content-Type", "")
            data = json.loads(raw) if content_type.startswith("application/json") else raw
            return Answer(resp.status, dict(resp.headers), data)
        finally:
            conn.close()

    def raw(self, data: bytes) -> tuple[int, Any]:
        """Send bytes as they are; the status and the JSON body of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(data)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        assert b"content-type: application/json" in head.lower(), received[:500]
        return status, json.loads(body)

    def log_lines(self) -> list[str]:
        return [line for line in self.process.log_path.read_text().splitlines() if line]

    def events(self, name: str) -> list[dict[str, Any]]:
        return self.process.events(name)


@contextmanager
def running_sidecar(env: dict[str, str], log_path: Path, *args: str,
                    command: str = "api") -> Iterator[Sidecar]:
    """``stockq <command> --port <free port> <args>``, until it answers; stopped after."""
    port = free_port()
    process = WorkerProcess(env, log_path, "--port", str(port), *args, command=command)
    try:
        wait_until(lambda: process.events("api.started") or process.proc.poll() is not None,
                   90, f"stockq {command} to start")
        assert process.proc.poll() is None, log_path.read_text()[-3000:]
        yield Sidecar(process, port)
    finally:
        assert process.stop() == 0, log_path.read_text()[-3000:]


def refused_start(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command that must refuse to start (it is killed after 60 s otherwise)."""
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def task_keys(store: redis.Redis) -> list[str]:
    return sorted(str(k) for k in store.scan_iter("stock:task:*"))
