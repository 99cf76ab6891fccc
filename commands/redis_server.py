"""Start and stop a local ``redis-server``: the embedded default and the tests' fixture.

A system Redis may already hold 6379, so the embedded server uses its own port
and data folder. AOF is on: an event the feedback API acknowledged survives a
restart (with ``appendfsync always``, even a power loss).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RedisServer:
    port: int
    data_dir: Path
    fsync: str = "everysec"
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server not found: install it (`apt-get install redis-server`, "
                "or `make setup`) or set REDIS_URL to an existing Redis"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.data_dir.resolve()),
                "--appendonly", "yes",
                "--appendfsync", self.fsync,
                "--save", "",
                # feedback must never be evicted (see README: Redis and eviction)
                "--maxmemory-policy", "noeviction",
                "--logfile", str((self.data_dir / "redis.log").resolve()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Out of the terminal's process group: Ctrl-C signals the whole foreground
            # group, and Redis must outlive the Serve app and the learners (stop()
            # ends it last); in the group it died first and the Generator's adapter
            # listener logged "Connection refused; resubscribing" until it was killed.
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping():
                    # AOF rewrite of a loaded file may still be going on: wait for load
                    if client.info("persistence").get("loading", 0) == 0:
                        return self
            except redis.ConnectionError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # SHUTDOWN flushes the AOF; terminate is the fallback
            try:
                redis.Redis.from_url(self.url).shutdown(nosave=False)
            except (redis.ConnectionError, redis.ResponseError):
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: what a crash looks like (tests of durability use it)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
