"""The serving model's adapter slots: a bounded LRU of per-user LoRA adapters.

Adapters come into the slots of the serving model's ``MultiLoRALinear`` layers from
the host-memory tier (``service.adapter_host_cache``), which reads the store on its own
miss. A slot in use by a running batch is pinned and never evicted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from contracts.adapter_store import AdapterStore, LoadedAdapter
from contracts.lora_config import AdapterError, ServedLora, check_servable, lora_module
from service.adapter_host_cache import HostAdapter, HostAdapterCache
from service.multi_lora import MultiLoRALinear


def lora_pairs(
    adapter: LoadedAdapter, layers: dict[str, MultiLoRALinear], max_rank: int
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """Map peft's tensor names onto the serving model's layers, once the adapter passed
    ``check_servable`` (the check ``tailor adapter publish`` makes too).

    peft saves ``base_model.model.<module path>.lora_A.weight`` (r, in) and
    ``...lora_B.weight`` (out, r); the scale is ``lora_alpha / r`` (``/ sqrt(r)``
    with rsLoRA).
    """
    config = adapter.config
    served = ServedLora(frozenset(path.rsplit(".", 1)[-1] for path in layers), max_rank)
    check_servable(config, adapter.tensors, served)
    scale = config.lora_alpha / (config.r**0.5 if config.use_rslora else config.r)
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, tensor in adapter.tensors.items():
        module = lora_module(name)
        if module is None:
            continue
        if module not in layers:  # a served layer name, at a path this model lacks
            raise AdapterError(
                f"adapter targets {module}, which this server does not serve with LoRA; "
                "train it with TAILOR_LORA_TARGET_MODULES of the server"
            )
        lora_b = adapter.tensors[name.replace(".lora_A.", ".lora_B.")]
        pairs[module] = (tensor, lora_b)
    if not pairs:
        raise AdapterError("adapter has no lora_A/lora_B tensors")
    return pairs, scale


def prepare_for_slots(adapter: LoadedAdapter, layers: dict[str, MultiLoRALinear],
                      max_rank: int) -> HostAdapter:
    """A stored adapter, checked and mapped (``lora_pairs``), as the slots hold it."""
    pairs, scale = lora_pairs(adapter, layers, max_rank)
    return HostAdapter({module: layers[module].prepare(lora_a, lora_b, scale)
                        for module, (lora_a, lora_b) in pairs.items()})


class AdapterCache:
    """Adapters in the slots of the serving model; LRU over unpinned slots. Behind the
    slots, ``host``: more adapters in host memory (``host_capacity``; 0: every slot
    miss reads the store)."""

    def __init__(
        self, layers: dict[str, MultiLoRALinear], num_slots: int, max_rank: int,
        store: AdapterStore, host_capacity: int = 0,
    ) -> None:
        self.layers = layers
        self.max_rank = max_rank
        self.store = store
        self.host = HostAdapterCache(host_capacity, lambda user_id, version: prepare_for_slots(
            store.load(user_id, version), layers, max_rank))
        self._slot_of: OrderedDict[tuple[str, str], int] = OrderedDict()  # LRU order
        self._pins: dict[int, int] = {}
        self._free = list(range(num_slots, 0, -1))  # slot 0 is the base model
        self._lock = threading.Lock()
        self.hits = self.misses = self.loads = self.evictions = 0

    def acquire(self, user_id: str, version: str) -> int:
        """The slot holding (user, version), loading it if needed; pinned until released."""
        key = (user_id, version)
        with self._lock:
            slot = self._slot_of.get(key)
            if slot is not None:
                self.hits += 1
                self._slot_of.move_to_end(key)
                self._pins[slot] = self._pins.get(slot, 0) + 1
                return slot
            self.misses += 1
            slot = self._take_slot()
            self._pins[slot] = 1  # pinned while loading, so no one evicts it
        try:
            self._load_into(slot, self.host.get(user_id, version))
        except Exception:
            with self._lock:
                del self._pins[slot]
                self._free.append(slot)
            raise
        with self._lock:
            self._slot_of[key] = slot
            self.loads += 1
        return slot

    def release(self, slot: int) -> None:
        if slot == 0:
            return
        with self._lock:
            self._pins[slot] -= 1
            if self._pins[slot] == 0:
                del self._pins[slot]

    def pinned(self) -> int:
        """Slots held by requests now (they cannot be evicted)."""
        with self._lock:
            return len(self._pins)

    def cached(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._slot_of)

    def prefetch(self, user_id: str, version: str) -> None:
        """Bring a newly published adapter close: into host memory where there is a host
        tier (a slot is taken from another user only when a request needs it), else
        into a slot. The user's older versions are dropped from both tiers."""
        if self.host.capacity > 0:
            self.host.get(user_id, version)
        else:
            self.release(self.acquire(user_id, version))
        self.drop_user(user_id, keep_version=version)

    def drop_user(self, user_id: str, keep_version: str | None = None) -> None:
        """Forget a user's cached versions (all, or all but ``keep_version``) unless in use."""
        self.host.drop_user(user_id, keep_version)
        with self._lock:
            for key in [k for k in self._slot_of if k[0] == user_id and k[1] != keep_version]:
                slot = self._slot_of[key]
                if slot not in self._pins:
                    del self._slot_of[key]
                    self._free.append(slot)

    def _take_slot(self) -> int:
        if self._free:
            return self._free.pop()
        for key, slot in self._slot_of.items():  # least recently used first
            if slot not in self._pins:
                del self._slot_of[key]
                self.evictions += 1
                return slot
        raise AdapterError(
            "every adapter slot is in use; raise TAILOR_ADAPTER_CACHE_SIZE above "
            "TAILOR_MAX_BATCH_SIZE"
        )

    def _load_into(self, slot: int, adapter: HostAdapter) -> None:
        for module, layer in self.layers.items():
            if module in adapter.layers:
                layer.load_prepared(slot, *adapter.layers[module])
            else:
                layer.clear_slot(slot)
