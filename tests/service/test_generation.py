"""GeneratorCore's adapter listener: a publish prefetches, a forget drops, stop() ends it."""

import time
from pathlib import Path

import redis
import torch

from contracts.adapter_store import AdapterRegistry, AdapterStore, publish_adapter
from contracts.keys import ADAPTER_CHANNEL
from contracts.settings import Settings
from service.generation import GeneratorCore


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_published_adapter_is_prefetched_a_forgotten_user_dropped_and_stop_ends_the_listener(
    serving_model_dir: Path, adapter_dirs: list[Path], redis_server, redis_client, tmp_path
):
    torch.set_num_threads(1)
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                        data_dir=tmp_path, redis_url=redis_server.url)
    def subscribers() -> int:
        return redis_client.pubsub_numsub(ADAPTER_CHANNEL)[0][1]

    others = subscribers()  # servers of other tests on this Redis
    core = GeneratorCore(settings)
    core.start()
    try:
        assert wait_until(lambda: subscribers() == others + 1)
        registry = AdapterRegistry(redis.Redis.from_url(redis_server.url))
        version = publish_adapter(AdapterStore(settings.adapter_store_uri), registry, "alice",
                                  adapter_dirs[0])
        assert wait_until(lambda: ("alice", version) in core.engine.engine.cache.cached())
        redis_client.publish(ADAPTER_CHANNEL, "alice ")  # what forgetting alice sends
        assert wait_until(lambda: not core.engine.engine.cache.cached())
    finally:
        core.stop()
    assert not core._listener.is_alive()
    assert wait_until(lambda: subscribers() == others)
