"""Shared fixtures: a real redis-server on a free port, settings pointing at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from commands.redis_server import RedisServer, free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill or restart it."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis", fsync="always")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def serving_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama + byte-level BPE tokenizer saved as a HF folder (~1 s)."""
    from tests.builders import build_serving_model

    return build_serving_model(tmp_path_factory.mktemp("serving-model"))


@pytest.fixture(scope="session")
def adapter_dirs(serving_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three random peft LoRA adapters for the serving model (q_proj, v_proj, rank 8)."""
    from tests.builders import build_random_adapter

    root = tmp_path_factory.mktemp("adapters")
    return [build_random_adapter(serving_model_dir, root / f"a{i}", seed=i) for i in range(3)]


def redis_snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key's serialized value (DUMP): equal snapshots mean nothing changed."""
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}
