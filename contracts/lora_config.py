"""Which peft LoRA adapters the serving engine can serve, checked where adapters come in.

The engine (``service/multi_lora.py``) adds plain LoRA to the layers named in
``TAILOR_LORA_TARGET_MODULES``: ``y += (x A^T) B^T * alpha / r`` (``/ sqrt(r)``
with rsLoRA), one rank and one alpha per adapter, ranks up to
``TAILOR_MAX_LORA_RANK``. peft saves adapters beyond that: per-layer ranks and
alphas (``rank_pattern``, ``alpha_pattern``), DoRA's magnitude vectors, other
layers. Served as if they were plain LoRA they would answer differently from
how they were trained, and nothing would say so (issue 10). So
``tailor adapter publish`` and the engine's adapter cache refuse them, with the
one check here: ``check_servable``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peft import LoraConfig

    from contracts.settings import Settings

CONFIG_FILE = "adapter_config.json"  # peft's name (peft.utils.CONFIG_NAME)
LORA_A_SUFFIX = ".lora_A.weight"
PEFT_PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter that cannot be served here (bad files, rank, targets)."""


@dataclass(frozen=True)
class ServedLora:
    """What the serving engine serves: LoRA on these layer names, up to this rank."""

    target_modules: frozenset[str]  # leaf names of the served layers: "q_proj", "v_proj"
    max_rank: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ServedLora:
        return cls(frozenset(settings.lora_target_modules), settings.max_lora_rank)


def read_lora_config(folder: Path) -> LoraConfig:
    """The adapter's config as peft reads it; ``AdapterError`` if it is no LoRA config."""
    # peft imported here, not at the top: the Ingress imports this module (through the
    # adapter store) only to delete adapters, and peft would add seconds to its start.
    from peft import LoraConfig

    if not (folder / CONFIG_FILE).is_file():
        # Checked first: given a folder without it, peft would ask the Hub.
        raise AdapterError(f"{folder} has no {CONFIG_FILE}: save it with peft's save_pretrained")
    try:
        # A config of another peft type comes back as that type's config class.
        config = LoraConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, KeyError) as err:
        raise AdapterError(
            f"{CONFIG_FILE} is not a config peft can read ({err}); "
            "save the adapter with peft's save_pretrained"
        ) from err
    if not isinstance(config, LoraConfig):
        raise AdapterError(
            f"peft_type={getattr(config.peft_type, 'value', config.peft_type)} is not LoRA: "
            "this server serves LoRA adapters only; train one with peft.LoraConfig"
        )
    return config


def lora_module(tensor_name: str) -> str | None:
    """The module path a peft ``lora_A`` tensor belongs to; None for any other tensor."""
    if not tensor_name.endswith(LORA_A_SUFFIX):
        return None
    return tensor_name.removeprefix(PEFT_PREFIX).removesuffix(LORA_A_SUFFIX)


def check_servable(config: LoraConfig, tensor_names: Iterable[str], served: ServedLora) -> None:
    """Refuse, with the field and the fix, an adapter the engine would serve wrongly.

    ``tensor_names``: the names in the adapter's weights file. Its layers are checked
    as well as ``target_modules``, because a regex ``target_modules`` names no layer.
    """
    if config.rank_pattern:
        raise AdapterError(
            f"rank_pattern={config.rank_pattern} gives some layers a rank of their own; this "
            "server serves one rank per adapter (r): train with rank_pattern={}"
        )
    if config.alpha_pattern:
        raise AdapterError(
            f"alpha_pattern={config.alpha_pattern} gives some layers an alpha of their own; "
            "this server serves one alpha per adapter (lora_alpha): train with alpha_pattern={}"
        )
    if config.use_dora:
        raise AdapterError(
            "use_dora=True: this server serves plain LoRA, not DoRA's magnitude vectors; "
            "train with use_dora=False"
        )
    if config.r > served.max_rank:
        raise AdapterError(
            f"r={config.r} exceeds TAILOR_MAX_LORA_RANK={served.max_rank}; train with "
            f"r <= {served.max_rank}, or raise TAILOR_MAX_LORA_RANK on the server"
        )
    # peft matches a target as the module's name or a dotted suffix of its path; the
    # engine wraps layers by name.
    targets = config.target_modules if isinstance(config.target_modules, set | list) else ()
    for target in sorted(targets):
        if target.rsplit(".", 1)[-1] not in served.target_modules:
            raise AdapterError(
                f"target_modules includes {target!r}, which this server does not serve with "
                f"LoRA (TAILOR_LORA_TARGET_MODULES={sorted(served.target_modules)}); train on "
                "those modules only, or add it to them and restart the server"
            )
    for module in sorted({m for m in map(lora_module, tensor_names) if m is not None}):
        if module.rsplit(".", 1)[-1] not in served.target_modules:
            raise AdapterError(
                f"the weights hold LoRA for {module}, which this server does not serve with "
                f"LoRA (TAILOR_LORA_TARGET_MODULES={sorted(served.target_modules)}); train "
                "with target_modules among those, or add it to them and restart the server"
            )
