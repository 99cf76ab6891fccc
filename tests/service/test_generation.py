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
        cache = core.engine.engine.cache
        assert wait_until(lambda: ("alice", version) in cache.host.cached())  # the host tier
        cache.release(cache.acquire("alice", version))  # a request for it takes a slot
        assert ("alice", version) in cache.cached()
        redis_client.publish(ADAPTER_CHANNEL, "alice ")  # what forgetting alice sends
        assert wait_until(lambda: not cache.cached() and not cache.host.cached())
    finally:
        core.stop()
    assert not core._listener.is_alive()
    assert wait_until(lambda: subscribers() == others)


def test_a_redis_outage_is_logged_once_and_the_listener_subscribes_again(
    serving_model_dir: Path, fresh_redis, tmp_path, caplog
):
    torch.set_num_threads(1)
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                        data_dir=tmp_path, redis_url=fresh_redis.url)
    client = redis.Redis.from_url(fresh_redis.url)
    core = GeneratorCore(settings)
    core.start()
    try:
        assert wait_until(lambda: client.pubsub_numsub(ADAPTER_CHANNEL)[0][1] == 1)
        fresh_redis.kill()
        assert wait_until(lambda: "resubscribing" in caplog.text)
        time.sleep(3.5)  # the listener retries every second meanwhile: ~3 more attempts
        fresh_redis.start()
        assert wait_until(lambda: "subscribed again" in caplog.text)
        assert wait_until(lambda: client.pubsub_numsub(ADAPTER_CHANNEL)[0][1] == 1)
    finally:
        core.stop()
        client.close()
    assert caplog.text.count("resubscribing") == 1, caplog.text  # once per outage, not per retry
    assert caplog.text.count("subscribed again") == 1
