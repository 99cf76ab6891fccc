"""A learner worker's cache of recently trained users."""

from __future__ import annotations

import shutil

import httpx
import torch

from contracts.adapter_store import AdapterStore
from contracts.settings import Settings
from learners.gate import GateConfig
from learners.user_state_cache import UserState, UserStateCache
from learners.worker import LearnerLoop, LearnerOptions
from tests.learning_fixtures import give_rankings
from tests.local_server import local_server


def state(version: str) -> UserState:
    return UserState(version, {"lora": torch.zeros(2)}, {"head": torch.zeros(1)})


def test_the_cache_is_bounded_evicts_the_least_recently_trained_and_serves_only_the_published():
    cache = UserStateCache(2)
    cache.put("ann", state("v1"))
    cache.put("ben", state("v1"))
    assert cache.get("ann", "v1") is not None  # ann trained again: ben is now the oldest
    cache.put("cat", state("v1"))
    assert cache.users() == ["ann", "cat"] and cache.evictions == 1
    assert cache.get("ann", "v2") is None  # another worker published v2 since: not ours
    cache.drop("cat")
    assert cache.users() == ["ann"] and (cache.hits, cache.misses) == (1, 1)
    kept_at = cache.get("ann", "v1").kept_at
    cache.drop_forgotten({"ann": kept_at - 1.0})  # forgotten before it was kept (came back)
    assert cache.users() == ["ann"]
    cache.drop_forgotten({"ann": kept_at})  # forgotten since: dropped
    assert cache.users() == []
    none_kept = UserStateCache(0)
    none_kept.put("ann", state("v1"))
    assert none_kept.users() == []


def test_a_returning_user_is_trained_from_the_workers_cache_not_the_store(
        serving_model_dir, redis_server, tmp_path):
    torch.set_num_threads(1)
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                        data_dir=tmp_path, redis_url=redis_server.url, learner_min_feedback=4,
                        learner_ppo_iterations=1, learner_rollout_batch=4,
                        learner_max_new_tokens=8)
    with local_server(settings) as url:
        give_rankings(url, "alice", 4)
        # every update publishes (only published versions are kept): this test is about the
        # cache, not the gate, which refused one CI run's update of bob as reward_regressed
        anything_goes = GateConfig(kl_bound=1e9, tolerance=1e9, cost_tolerance=1e9)
        loop = LearnerLoop(settings, "w1", LearnerOptions(gate=anything_goes))
        first = loop.step(block_ms=50)
        assert first.decision.publish
        store = AdapterStore(settings.adapter_store_uri)
        published = store.load("alice", first.version).tensors
        kept = loop.updater.user_states.get("alice", first.version)
        assert kept is not None and set(kept.value_head)
        # the cache holds exactly the published adapter (peft's saved names lack ".default")
        assert {name.replace(".default", ""): t for name, t in kept.lora.items()}.keys() == (
            published.keys())
        for name, tensor in kept.lora.items():
            torch.testing.assert_close(tensor, published[name.replace(".default", "")])
        # alice's files leave the store: her next update can only start from the cache
        shutil.rmtree(store.version_path("alice", first.version))
        give_rankings(url, "alice", 4, start=4)
        second = loop.step(block_ms=50)
        assert second.user_id == "alice" and second.examples == 4 and second.decision.publish
        assert loop.updater.user_states.hits == 2  # the check above, and the update
        # forgotten: at the worker's next update (here bob's) nothing of alice's stays
        httpx.delete(f"{url}/v1/users/alice", headers={"X-User-Id": "alice"}).raise_for_status()
        give_rankings(url, "bob", 4, start=8)
        assert loop.step(block_ms=50).user_id == "bob"
    assert loop.updater.user_states.users() == ["bob"]
