"""`tailor up`, then Ctrl-C: answers in flight finish, new requests get 503, the learner
releases its lease, Redis stops last, and the log holds no reconnection loop. (SIGTERM takes
the same path: `tailor check-faults` and tests/benchmarks/test_check_faults.py end with it.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from commands.redis_server import RedisServer, free_port
from contracts.keys import PREFIX
from tests.learning_fixtures import give_rankings

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[2]
STREAM = {"model": "tailor-base", "messages": [{"role": "user", "content": "tell me a story"}],
          "max_tokens": 200, "temperature": 0.0, "stream": True}


def wait_for(check, what: str, timeout_s: float = 300):
    """Poll ``check`` until it returns something true (a start-up may take minutes on 2 busy
    cores: a bound on waiting, not an assertion on speed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
            if found:
                return found
        except (httpx.HTTPError, redis.RedisError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"never: {what}")


def read_stream(url: str, started: threading.Event, out: list) -> None:
    """One streamed answer: ``started`` once its first chunk arrived; its events into ``out``."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=STREAM, timeout=300,
                      headers={"X-User-Id": "bob"}) as response:
        out.append(response.status_code)
        for line in response.iter_lines():
            if line.startswith("data: "):
                out.append(line[6:])
                started.set()
    started.set()


def test_ctrl_c_drains_requests_releases_leases_and_stops_redis_last(serving_model_dir: Path,
                                                                     tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TAILOR_BASE_MODEL": str(serving_model_dir),
           "TAILOR_DATA_DIR": str(tmp_path / "data"), "TAILOR_PORT": str(port),
           "TAILOR_REDIS_PORT": str(redis_port), "TAILOR_REDIS_FSYNC": "always",
           "TAILOR_LEARNER_WORKERS": "1", "TAILOR_LEARNER_MIN_FEEDBACK": "4",
           # an update far longer than the drain: the learner must drop it and free the user
           # (no KL bound in reach, or its early stop would end the update first)
           "TAILOR_LEARNER_PPO_ITERATIONS": "100000", "TAILOR_LEARNER_KL_BOUND": "1e9",
           "TAILOR_LEARNER_ROLLOUT_BATCH": "4",
           "TAILOR_LEARNER_MAX_NEW_TOKENS": "8", "TAILOR_DRAIN_TIMEOUT_S": "20"}
    env.pop("REDIS_URL", None)
    log_path = tmp_path / "tailor-up.log"
    with log_path.open("w") as log:
        runner = subprocess.Popen([sys.executable, "-c", "from commands.cli import app; app()",
                                   "up"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    store = redis.Redis(port=redis_port)
    try:
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, "ready")
        give_rankings(url, "alice", 4)
        updating = wait_for(lambda: [k for k in store.scan_iter(f"{PREFIX}:learner:worker:*")
                                     if store.hget(k, "state") == b"updating"],
                            "a learner updating alice", timeout_s=600)
        assert store.exists(f"{PREFIX}:learner:lease:alice")

        streams = [([], threading.Event()) for _ in range(2)]
        readers = [threading.Thread(target=read_stream, args=(url, started, out))
                   for out, started in streams]
        for reader in readers:
            reader.start()
        for _, started in streams:
            started.wait(300)  # each answer is under way
        os.killpg(runner.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole process group

        # Draining: not ready, and a new request is refused with a reason and a retry time,
        # while the learner is given the drain timeout to end its update.
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 503, "draining",
                 timeout_s=60)
        refused = httpx.post(f"{url}/v1/chat/completions", headers={"X-User-Id": "carol"},
                             json={**STREAM, "stream": False}, timeout=60)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"]["code"] == "shutting_down"

        for reader in readers:
            reader.join(300)
        assert runner.wait(300) == 0
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    output = log_path.read_text()

    for out, _ in streams:  # each answer in flight at the signal ran to its end
        status, *events = out
        assert status == 200 and events[-1] == "[DONE]", output[-3000:]
        finish = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1]
                  if json.loads(e).get("choices")]
        assert finish[-1] in ("stop", "length"), events[-3:]
        assert not any("error" in json.loads(e) for e in events[:-1])

    # Redis stopped last, after the learner let go: restarted on its data, no lease is left.
    server = RedisServer(redis_port, tmp_path / "data" / "redis", "always").start()
    try:
        client = redis.Redis.from_url(server.url)
        assert not client.exists(f"{PREFIX}:learner:lease:alice")
        assert {client.hget(k, "state") for k in updating} == {b"stopped"}
    finally:
        server.stop()
    assert "dropped, its lease released" in output, output[-3000:]
    assert "drained: every request in flight finished" in output, output[-3000:]
    assert output.count("resubscribing") == 0, output[-3000:]
    assert output.count("Connection refused") == 0, output[-3000:]
    assert "Redis unreachable" not in output, output[-3000:]
