"""Per-user LoRA adapters: the store (files) and the registry (versions).

- ``AdapterStore``: peft-format folders (``adapter_config.json`` +
  ``adapter_model.safetensors``) under an fsspec URI, one immutable folder per
  version: ``{root}/{user_id}/{version}/``. Files are written completely before
  a version is published, so a replica never sees half an adapter.
- ``AdapterRegistry``: the current version of each user is a pointer in Redis,
  swapped in one command, then announced on a pub/sub channel.

What the serving engine can serve is checked in ``contracts.lora_config``:
``publish_adapter`` checks before anything is published, the engine at load.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
import redis
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors

from contracts.keys import ADAPTER_CHANNEL, USERS_SET, adapter_pointer_key, user_key
from contracts.lora_config import (
    CONFIG_FILE,
    AdapterError,
    ServedLora,
    check_servable,
    read_lora_config,
)

if TYPE_CHECKING:
    from peft import LoraConfig

WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass
class LoadedAdapter:
    config: LoraConfig
    tensors: dict[str, torch.Tensor]


class AdapterStore:
    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)

    def version_path(self, user_id: str, version: str) -> str:
        return f"{self.root}/{user_id}/{version}"

    def put(self, user_id: str, version: str, local_dir: Path) -> str:
        """Copy a saved peft adapter folder into the store as ``version``."""
        check_adapter_folder(local_dir)
        target = self.version_path(user_id, version)
        self.fs.makedirs(target, exist_ok=True)
        # Weights first, config last: a reader that finds the config finds the weights.
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            self.fs.put_file(str(local_dir / name), f"{target}/{name}")
        return target

    def load(self, user_id: str, version: str) -> LoadedAdapter:
        path = self.version_path(user_id, version)
        try:
            with self.fs.open(f"{path}/{CONFIG_FILE}", "rb") as f:
                raw_config = f.read()
            with self.fs.open(f"{path}/{WEIGHTS_FILE}", "rb") as f:
                tensors = load_safetensors(f.read())
        except FileNotFoundError as err:
            raise AdapterError(f"adapter {user_id}/{version} is missing from the store") from err
        # peft reads a config from a local folder only (else it asks the Hub), and the
        # store may be s3:// or gs://: one small file copied per load (a cache miss).
        with tempfile.TemporaryDirectory(prefix="tailor-adapter-") as local_dir:
            (Path(local_dir) / CONFIG_FILE).write_bytes(raw_config)
            try:
                config = read_lora_config(Path(local_dir))
            except AdapterError as err:  # named by its place in the store, not the copy
                raise AdapterError(f"adapter {user_id}/{version}: {err}") from err
        return LoadedAdapter(config=config, tensors=tensors)

    def delete_user(self, user_id: str) -> None:
        path = f"{self.root}/{user_id}"
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def check_adapter_folder(local_dir: Path, served: ServedLora | None = None) -> None:
    """A saved peft adapter folder, and (given ``served``) one the engine can serve."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (local_dir / name).is_file():
            raise AdapterError(f"{local_dir} has no {name}: save it with peft's save_pretrained")
    if served is not None:
        try:
            with safe_open(local_dir / WEIGHTS_FILE, framework="pt") as weights:  # header only
                tensor_names = list(weights.keys())
        except SafetensorError as err:
            raise AdapterError(
                f"{local_dir / WEIGHTS_FILE} is not a safetensors file ({err}): save the "
                "adapter with peft's save_pretrained"
            ) from err
        check_servable(read_lora_config(local_dir), tensor_names, served)


def new_version(sequence: int) -> str:
    """Version ids are unique forever (a forgotten user who returns never gets an old id)."""
    return f"v{sequence}.{uuid.uuid4().hex[:8]}"


class AdapterRegistry:
    """Which adapter version each user is served; sync, for learners and the CLI."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def current(self, user_id: str) -> str | None:
        version = self.client.hget(adapter_pointer_key(user_id), "version")
        return version.decode() if version else None

    def next_version(self, user_id: str) -> str:
        return new_version(self.client.hincrby(user_key(user_id), "adapter_sequence", 1))

    def publish(self, user_id: str, version: str, metrics: dict[str, float] | None = None) -> None:
        """Swap the user's pointer to ``version`` (files must be in the store) and notify."""
        pointer = {"version": version, "published_at": f"{time.time():.3f}"}
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(adapter_pointer_key(user_id), mapping=pointer)
            pipe.hset(user_key(user_id), mapping={"adapter_version": version, **(metrics or {})})
            pipe.sadd(USERS_SET, user_id)
            pipe.publish(ADAPTER_CHANNEL, f"{user_id} {version}")
            pipe.execute()


def publish_adapter(
    store: AdapterStore,
    registry: AdapterRegistry,
    user_id: str,
    local_dir: Path,
    served: ServedLora | None = None,
) -> str:
    """Put a peft adapter folder in the store and make it the user's current version.

    ``served``: what the serving engine serves; an adapter it cannot serve is refused
    here, before its first request. None leaves that to the engine, which refuses it
    at load.
    """
    check_adapter_folder(local_dir, served)  # before anything changes in Redis
    version = registry.next_version(user_id)
    store.put(user_id, version, local_dir)
    registry.publish(user_id, version)
    return version
