"""Adapter store, registry and validation."""

import json
import shutil

import pytest
import redis
import torch
from transformers import AutoModelForCausalLM

from contracts.adapter_store import AdapterError, AdapterRegistry, AdapterStore, publish_adapter
from contracts.keys import ADAPTER_CHANNEL
from contracts.lora_config import ServedLora
from service.adapter_cache import AdapterCache, lora_pairs
from service.multi_lora import inject_multi_lora
from tests.builders import UNSERVABLE, adapter_with_config, build_random_adapter

SERVED = ServedLora(frozenset({"q_proj", "v_proj"}), max_rank=16)  # the Settings defaults


def test_publish_puts_files_then_swaps_pointer_and_notifies(
        tmp_path, adapter_dirs, redis_server, redis_client):
    store = AdapterStore(str(tmp_path / "store"))
    registry = AdapterRegistry(redis.Redis.from_url(redis_server.url))
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(ADAPTER_CHANNEL)
    v1 = publish_adapter(store, registry, "alice", adapter_dirs[0])
    v2 = publish_adapter(store, registry, "alice", adapter_dirs[1])
    assert v1 != v2 and registry.current("alice") == v2
    # immutable versions: the old one is still complete in the store
    assert store.load("alice", v1).tensors.keys() == store.load("alice", v2).tensors.keys()
    messages = []
    for _ in range(20):  # get_message returns None for the subscribe confirmation
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            messages.append(message["data"].decode())
        if len(messages) == 2:
            break
    assert messages == [f"alice {v1}", f"alice {v2}"]


def test_a_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(AdapterError, match="adapter_model.safetensors"):
        AdapterStore(str(tmp_path / "store")).put("alice", "v1", tmp_path)


def test_adapters_that_this_server_cannot_serve_are_refused(
        tmp_path, serving_model_dir, adapter_dirs):
    model = AutoModelForCausalLM.from_pretrained(serving_model_dir)
    _, layers = inject_multi_lora(model, ["q_proj"], num_slots=2, max_rank=16)
    store = AdapterStore(str(tmp_path))
    store.put("alice", "v1", adapter_dirs[0])  # targets q_proj and v_proj
    with pytest.raises(AdapterError, match="v_proj"):
        lora_pairs(store.load("alice", "v1"), layers, max_rank=16)
    with pytest.raises(AdapterError, match="r=8 exceeds TAILOR_MAX_LORA_RANK=4"):
        lora_pairs(store.load("alice", "v1"), layers, max_rank=4)


@pytest.fixture(scope="module")
def engine_cache_parts(serving_model_dir):
    """The layers an engine with the default settings serves (q_proj, v_proj; rank <= 16)."""
    model = AutoModelForCausalLM.from_pretrained(serving_model_dir)
    _, layers = inject_multi_lora(model, sorted(SERVED.target_modules), num_slots=2,
                                  max_rank=SERVED.max_rank)
    return layers


@pytest.fixture(scope="module")
def k_proj_adapter(serving_model_dir, tmp_path_factory):
    """An adapter whose weights hold LoRA for k_proj, which the server does not serve."""
    root = tmp_path_factory.mktemp("k-proj")
    return build_random_adapter(serving_model_dir, root / "adapter", seed=7,
                                targets=["q_proj", "k_proj"])


@pytest.mark.parametrize("name", UNSERVABLE)
def test_an_unservable_adapter_is_refused_at_load_with_the_field_named(
        name, tmp_path, adapter_dirs, engine_cache_parts):
    fields, words = UNSERVABLE[name]
    store = AdapterStore(str(tmp_path / "store"))
    # Put straight into the store, as a publisher that checks nothing would.
    store.put("alice", "v1", adapter_with_config(adapter_dirs[0], tmp_path / name, **fields))
    cache = AdapterCache(engine_cache_parts, num_slots=2, max_rank=SERVED.max_rank, store=store)
    with pytest.raises(AdapterError) as refusal:
        cache.acquire("alice", "v1")
    for word in words:
        assert word in str(refusal.value)
    assert cache.cached() == [] and cache.pinned() == 0  # the slot went back


@pytest.mark.parametrize("name", UNSERVABLE)
def test_an_unservable_adapter_is_refused_at_publish_before_anything_changes(
        name, tmp_path, adapter_dirs, redis_server, redis_client):
    fields, words = UNSERVABLE[name]
    store = AdapterStore(str(tmp_path / "store"))
    registry = AdapterRegistry(redis.Redis.from_url(redis_server.url))
    folder = adapter_with_config(adapter_dirs[0], tmp_path / name, **fields)
    with pytest.raises(AdapterError) as refusal:
        publish_adapter(store, registry, "alice", folder, served=SERVED)
    for word in words:
        assert word in str(refusal.value)
    assert list(redis_client.scan_iter()) == [] and not (tmp_path / "store").exists()


@pytest.mark.parametrize("target_modules", [["q_proj", "k_proj"], r".*\.(q_proj|k_proj)"])
def test_weights_for_an_unserved_layer_are_refused_even_when_a_regex_names_the_targets(
        target_modules, tmp_path, k_proj_adapter, engine_cache_parts, redis_server):
    folder = adapter_with_config(k_proj_adapter, tmp_path / "adapter",
                                 target_modules=target_modules)
    store = AdapterStore(str(tmp_path / "store"))
    registry = AdapterRegistry(redis.Redis.from_url(redis_server.url))
    with pytest.raises(AdapterError, match="k_proj"):
        publish_adapter(store, registry, "alice", folder, served=SERVED)
    store.put("alice", "v1", folder)
    cache = AdapterCache(engine_cache_parts, num_slots=2, max_rank=SERVED.max_rank, store=store)
    with pytest.raises(AdapterError, match="k_proj"):
        cache.acquire("alice", "v1")


def test_a_servable_adapter_is_published_and_loaded(tmp_path, adapter_dirs, engine_cache_parts,
                                                     redis_server):
    store = AdapterStore(str(tmp_path / "store"))
    registry = AdapterRegistry(redis.Redis.from_url(redis_server.url))
    version = publish_adapter(store, registry, "alice", adapter_dirs[0], served=SERVED)
    loaded = store.load("alice", version)
    assert (loaded.config.r, loaded.config.lora_alpha, loaded.config.target_modules) == (
        8, 16, {"q_proj", "v_proj"})
    cache = AdapterCache(engine_cache_parts, num_slots=2, max_rank=SERVED.max_rank, store=store)
    slot = cache.acquire("alice", version)
    assert slot != 0 and cache.cached() == [("alice", version)]
    lora_a = loaded.tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    layer = engine_cache_parts["model.layers.0.self_attn.q_proj"]
    assert torch.equal(layer.a_t[slot, :, :8], lora_a.T)  # the adapter's A, in its slot


def test_an_adapter_at_the_maximum_rank_is_served_and_one_above_it_is_refused(
        tmp_path, serving_model_dir, engine_cache_parts, redis_client):
    # TAILOR_MAX_LORA_RANK is the largest rank served, inclusive: slots are that wide, so a
    # rank-16 adapter fills a slot exactly and must be accepted; rank 17 would not fit.
    at_max = build_random_adapter(serving_model_dir, tmp_path / "r16", seed=3,
                                  rank=SERVED.max_rank)
    store = AdapterStore(str(tmp_path / "store"))
    registry = AdapterRegistry(redis_client)
    version = publish_adapter(store, registry, "alice", at_max, served=SERVED)
    loaded = store.load("alice", version)
    assert loaded.config.r == SERVED.max_rank
    cache = AdapterCache(engine_cache_parts, num_slots=2, max_rank=SERVED.max_rank, store=store)
    slot = cache.acquire("alice", version)
    lora_a = loaded.tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    layer = engine_cache_parts["model.layers.0.self_attn.q_proj"]
    assert torch.equal(layer.a_t[slot], lora_a.T)  # every column of the slot is the adapter's
    cache.release(slot)

    above = adapter_with_config(at_max, tmp_path / "r17", r=SERVED.max_rank + 1)
    with pytest.raises(AdapterError, match="r=17 exceeds TAILOR_MAX_LORA_RANK=16"):
        publish_adapter(store, registry, "bob", above, served=SERVED)
    assert registry.current("bob") is None


def test_a_config_of_another_peft_type_is_refused(tmp_path, adapter_dirs, redis_server):
    folder = tmp_path / "prefix"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4}))
    shutil.copy(adapter_dirs[0] / "adapter_model.safetensors", folder)
    registry = AdapterRegistry(redis.Redis.from_url(redis_server.url))
    with pytest.raises(AdapterError, match="peft_type=PREFIX_TUNING is not LoRA"):
        publish_adapter(AdapterStore(str(tmp_path / "store")), registry, "alice", folder,
                        served=SERVED)


def test_a_weights_file_that_is_not_safetensors_is_refused_at_publish(tmp_path, adapter_dirs,
                                                                       redis_server):
    folder = adapter_with_config(adapter_dirs[0], tmp_path / "adapter")
    (folder / "adapter_model.safetensors").write_bytes(b"not safetensors")
    registry = AdapterRegistry(redis.Redis.from_url(redis_server.url))
    with pytest.raises(AdapterError, match="is not a safetensors file"):
        publish_adapter(AdapterStore(str(tmp_path / "store")), registry, "alice", folder,
                        served=SERVED)


def test_delete_user_removes_every_version(tmp_path, adapter_dirs):
    store = AdapterStore(str(tmp_path))
    store.put("alice", "v1", adapter_dirs[0])
    store.put("alice", "v2", adapter_dirs[1])
    store.delete_user("alice")
    with pytest.raises(AdapterError, match="missing"):
        store.load("alice", "v1")
