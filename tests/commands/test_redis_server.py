"""The embedded redis-server: it outlives a Ctrl-C meant for the runner, which stops it last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from commands.redis_server import RedisServer, free_port


def test_a_ctrl_c_to_the_runners_process_group_leaves_redis_for_the_runner_to_stop(tmp_path: Path):
    # The runner (here a child Python in a group of its own, as a shell runs `tailor up`)
    # starts redis-server, then the whole group gets SIGINT, as a terminal's Ctrl-C does.
    port = free_port()
    runner = subprocess.Popen(
        [sys.executable, "-c", (
            "import signal, sys, time\n"
            "from pathlib import Path\n"
            "from commands.redis_server import RedisServer\n"
            f"server = RedisServer(port={port}, data_dir=Path({str(tmp_path)!r})).start()\n"
            "signal.signal(signal.SIGINT, lambda *_: None)  # the runner handles Ctrl-C\n"
            "print('up', flush=True)\n"
            "time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=Path(__file__).parents[2])
    try:
        assert runner.stdout.readline().strip() == "up"
        os.killpg(runner.pid, signal.SIGINT)
        time.sleep(0.5)
        client = redis.Redis(port=port)
        assert client.ping()  # still there for the runner to stop last
        client.shutdown(nosave=True)
    finally:
        runner.kill()
        runner.wait()


def test_stop_ends_the_server(tmp_path: Path):
    server = RedisServer(port=free_port(), data_dir=tmp_path).start()
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    server.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
