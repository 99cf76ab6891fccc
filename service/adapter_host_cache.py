"""The host-memory tier of adapters, between the serving model's slots and the store.

The slots (``TAILOR_ADAPTER_CACHE_SIZE``, on the model's device) hold the adapters
the running batches use; a slot miss used to read the adapter store: a file or object
read, a safetensors parse, peft's config read and the servability checks. With many
users most misses are for adapters served minutes ago. This tier keeps many more
adapters in host memory (``TAILOR_ADAPTER_HOST_CACHE_SIZE``), already checked,
mapped onto the served layers, transposed, scaled and cast as the slots hold them, so
a slot miss that hits here is a memory copy — vLLM's ``max_cpu_loras``, S-LoRA's
unified pool in host memory. On CUDA the tensors are pinned, so the copy into a slot
is an asynchronous DMA. Prefetch on publish fills this tier, not a slot: a slot is
taken from another user only when a request needs it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class HostAdapter:
    """One adapter as the slots hold it: per served layer (A_t (in, r), B_t·scale (r, out))."""

    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for pair in self.layers.values() for t in pair)


# (user, version) -> the adapter read from the store, checked and prepared
Loader = Callable[[str, str], HostAdapter]


class HostAdapterCache:
    """A bounded LRU of prepared adapters in host memory (``capacity`` 0: none kept)."""

    def __init__(self, capacity: int, load: Loader) -> None:
        self.capacity = capacity
        self._load = load
        self._adapters: OrderedDict[tuple[str, str], HostAdapter] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self.hits = self.misses = self.evictions = 0

    def get(self, user_id: str, version: str) -> HostAdapter:
        """The adapter, from host memory or else read from the store (and kept)."""
        key = (user_id, version)
        with self._lock:
            adapter = self._adapters.get(key)
            if adapter is not None:
                self.hits += 1
                self._adapters.move_to_end(key)
                return adapter
            self.misses += 1
        # Read outside the lock: a store read takes milliseconds to seconds, and other
        # users' hits must not wait for it. Two misses of one adapter at once both read
        # it; the second insert replaces the first (same content).
        adapter = self._load(user_id, version)
        self._keep(key, adapter)
        return adapter

    def _keep(self, key: tuple[str, str], adapter: HostAdapter) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            replaced = self._adapters.pop(key, None)
            self._bytes += adapter.nbytes - (0 if replaced is None else replaced.nbytes)
            self._adapters[key] = adapter
            while len(self._adapters) > self.capacity:
                _, evicted = self._adapters.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1

    def cached(self) -> list[tuple[str, str]]:
        """Held adapters, least recently used first."""
        with self._lock:
            return list(self._adapters)

    def nbytes(self) -> int:
        """Host memory the held adapters take."""
        return self._bytes

    def drop_user(self, user_id: str, keep_version: str | None = None) -> None:
        """Forget a user's adapters (all, or all but ``keep_version``)."""
        with self._lock:
            for key in [k for k in self._adapters if k[0] == user_id and k[1] != keep_version]:
                self._bytes -= self._adapters.pop(key).nbytes
