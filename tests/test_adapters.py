"""Adapter store, registry and validation."""

import pytest
import redis
from transformers import AutoModelForCausalLM

from contracts.adapter_store import AdapterError, AdapterRegistry, AdapterStore, publish_adapter
from contracts.keys import ADAPTER_CHANNEL
from service.adapter_cache import lora_pairs
from service.multi_lora import inject_multi_lora


def test_publish_puts_files_then_swaps_pointer_and_notifies(tmp_path, adapter_dirs, redis_server, redis_client):
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


def test_adapters_that_this_server_cannot_serve_are_refused(tmp_path, serving_model_dir, adapter_dirs):
    model = AutoModelForCausalLM.from_pretrained(serving_model_dir)
    _, layers = inject_multi_lora(model, ["q_proj"], num_slots=2, max_rank=16)
    store = AdapterStore(str(tmp_path))
    store.put("alice", "v1", adapter_dirs[0])  # targets q_proj and v_proj
    with pytest.raises(AdapterError, match="v_proj"):
        lora_pairs(store.load("alice", "v1"), layers, max_rank=16)
    with pytest.raises(AdapterError, match="rank 8 exceeds"):
        lora_pairs(store.load("alice", "v1"), layers, max_rank=4)


def test_delete_user_removes_every_version(tmp_path, adapter_dirs):
    store = AdapterStore(str(tmp_path))
    store.put("alice", "v1", adapter_dirs[0])
    store.put("alice", "v2", adapter_dirs[1])
    store.delete_user("alice")
    with pytest.raises(AdapterError, match="missing"):
        store.load("alice", "v1")
