"""The Tailor under test: ``tailor up --no-learners`` as a child process on free loopback
ports, against a Redis the caller owns (``REDIS_URL``), so the suite can SIGKILL and
restart that Redis while Tailor runs.

No learners: the suite measures the online path, and a learner's PPO would take the
same two cores. (A learner SIGKILLed during feedback has its own tests, in
tests/learners/test_feedback_consumer.py.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.faults.processes import find_pids, memory_by_role


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TailorProcess:
    """``tailor up --no-learners`` on a free port; ``env``: its settings (``TAILOR_...``)."""

    def __init__(self, data_dir: Path, redis_url: str, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "tailor-up.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 300.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ) | {
            "REDIS_URL": self.redis_url, "TAILOR_DATA_DIR": str(self.data_dir),
            "TAILOR_PORT": str(self.port), "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"} | self.env
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "commands.cli", "up", "--no-learners"], env=env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`tailor up` exited with {self.process.returncode}; "
                                   f"see {self.log_path}")
            if self.ready():
                return
            time.sleep(1.0)
        raise TimeoutError(f"`tailor up` was not ready in {timeout_s:.0f} s; see {self.log_path}")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def memory(self, extra_pids: list[int]) -> dict[str, dict[str, float]]:
        """RSS by role of ``tailor up``'s process tree (Ray included) and ``extra_pids``."""
        return memory_by_role([self.process.pid, *extra_pids])

    def generator_pids(self) -> list[int]:
        return find_pids([self.process.pid], "tailor:Generator")

    def stop(self, timeout_s: float = 120.0) -> int | None:
        """SIGTERM (the graceful shutdown), then SIGKILL to the group; the exit status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            return None
