"""The host-memory tier of adapters behind the serving model's slots."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from contracts.adapter_store import AdapterStore
from contracts.lora_config import AdapterError
from service.adapter_cache import AdapterCache
from service.adapter_host_cache import HostAdapter, HostAdapterCache
from service.multi_lora import inject_multi_lora

MAX_RANK = 16
Q_PROJ = "model.layers.0.self_attn.q_proj"


def test_the_host_tier_is_a_bounded_lru_counting_hits_misses_and_evictions():
    reads: list[tuple[str, str]] = []

    def read(user_id: str, version: str) -> HostAdapter:  # the store read the tier saves
        reads.append((user_id, version))
        return HostAdapter({"layer": (torch.zeros(4, 2), torch.zeros(2, 4))})

    host = HostAdapterCache(2, read)
    for user in ("ann", "ben", "ann", "cat", "ann", "ben"):
        host.get(user, "v1")
    # ann stays (used last but one each time); ben went when cat came, cat when ben came back
    assert reads == [("ann", "v1"), ("ben", "v1"), ("cat", "v1"), ("ben", "v1")]
    assert (host.hits, host.misses, host.evictions) == (2, 4, 2)
    assert host.cached() == [("ann", "v1"), ("ben", "v1")]
    assert host.nbytes() == 2 * (8 + 8) * 4
    host.drop_user("ann")
    assert host.cached() == [("ben", "v1")] and host.nbytes() == (8 + 8) * 4

    none_kept = HostAdapterCache(0, read)
    none_kept.get("ann", "v1")
    none_kept.get("ann", "v1")
    assert none_kept.cached() == [] and none_kept.misses == 2 and none_kept.nbytes() == 0


@pytest.fixture
def slots(serving_model_dir):
    """The serving model's q/v layers with one adapter slot: every other user evicts."""
    model = AutoModelForCausalLM.from_pretrained(serving_model_dir)
    _, layers = inject_multi_lora(model, ["q_proj", "v_proj"], num_slots=1, max_rank=MAX_RANK)
    return layers


@pytest.mark.parametrize("host_capacity", [4, 0])
def test_a_slot_miss_the_host_tier_holds_reads_nothing_from_the_store(
        host_capacity, slots, adapter_dirs, tmp_path):
    root = tmp_path / "store"
    store = AdapterStore(str(root))
    store.put("alice", "v1", adapter_dirs[0])
    store.put("bob", "v1", adapter_dirs[1])
    cache = AdapterCache(slots, num_slots=1, max_rank=MAX_RANK, store=store,
                         host_capacity=host_capacity)
    lora_a = store.load("alice", "v1").tensors[f"base_model.model.{Q_PROJ}.lora_A.weight"]
    for user in ("alice", "bob"):  # bob takes alice's only slot
        cache.release(cache.acquire(user, "v1"))
    assert cache.cached() == [("bob", "v1")] and cache.evictions == 1
    shutil.rmtree(root)  # from here on, a store read fails
    if host_capacity == 0:  # without the tier, alice's next request needs the store
        with pytest.raises((AdapterError, OSError)):
            cache.acquire("alice", "v1")
        return
    slot = cache.acquire("alice", "v1")
    assert torch.equal(slots[Q_PROJ].a_t[slot, :, :8], lora_a.T)  # alice's A, from host memory
    assert (cache.host.hits, cache.host.misses) == (1, 2)


def test_prefetch_fills_the_host_tier_not_a_slot_and_drops_older_versions(
        slots, adapter_dirs, tmp_path):
    store = AdapterStore(str(tmp_path / "store"))
    for version, folder in (("v1", adapter_dirs[0]), ("v2", adapter_dirs[1])):
        store.put("alice", version, folder)
    store.put("bob", "v1", adapter_dirs[2])
    cache = AdapterCache(slots, num_slots=1, max_rank=MAX_RANK, store=store, host_capacity=4)
    cache.release(cache.acquire("bob", "v1"))  # bob is being served
    cache.release(cache.acquire("alice", "v1"))
    cache.release(cache.acquire("bob", "v1"))
    cache.prefetch("alice", "v2")  # alice's new version is published
    assert cache.cached() == [("bob", "v1")]  # bob keeps the slot
    assert cache.host.cached() == [("bob", "v1"), ("alice", "v2")]  # alice's v1 dropped
    hits = cache.host.hits
    cache.acquire("alice", "v2")
    assert cache.host.hits == hits + 1  # her first request: a memory copy


def test_without_a_host_tier_prefetch_loads_a_slot(slots, adapter_dirs, tmp_path):
    store = AdapterStore(str(tmp_path / "store"))
    store.put("alice", "v1", adapter_dirs[0])
    cache = AdapterCache(slots, num_slots=1, max_rank=MAX_RANK, store=store, host_capacity=0)
    cache.prefetch("alice", "v1")
    assert cache.cached() == [("alice", "v1")] and cache.pinned() == 0
