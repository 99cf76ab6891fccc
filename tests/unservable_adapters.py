"""peft adapters the serving engine cannot serve, one per refusal of issue 10.

Each is a served adapter (q_proj and v_proj, rank 8) with one field of its
``adapter_config.json`` changed; with the server's defaults (targets q_proj and
v_proj, TAILOR_MAX_LORA_RANK=16) every one must be refused with the field named.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# name -> (fields changed in adapter_config.json, words the refusal must contain)
UNSERVABLE: dict[str, tuple[dict, list[str]]] = {
    "rank_pattern": ({"rank_pattern": {"q_proj": 4}}, ["rank_pattern=", "rank_pattern={}"]),
    "alpha_pattern": ({"alpha_pattern": {"v_proj": 32}}, ["alpha_pattern=", "alpha_pattern={}"]),
    "dora": ({"use_dora": True}, ["use_dora=True", "use_dora=False"]),
    "target_module": (
        {"target_modules": ["q_proj", "v_proj", "k_proj"]},
        ["target_modules includes 'k_proj'", "TAILOR_LORA_TARGET_MODULES"],
    ),
    "rank": ({"r": 32, "lora_alpha": 64}, ["r=32 exceeds TAILOR_MAX_LORA_RANK=16", "r <= 16"]),
}


def adapter_with_config(source: Path, out: Path, **fields: object) -> Path:
    """A copy of the adapter folder ``source`` with ``fields`` set in its config."""
    shutil.copytree(source, out)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, **fields}))
    return out


def one_line(text: str) -> str:
    """Output as one line: the console wraps long messages."""
    return " ".join(text.split())
