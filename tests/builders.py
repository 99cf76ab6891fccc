"""What tests build: tiny random models and tokenizers, and peft adapters.

No downloads; each builds in about a second or less.

- ``tiny_llama`` / ``tiny_tokenizer``: an in-memory Llama over a word-level
  vocabulary, for the learners (PPO, rollouts).
- ``build_serving_model``: a random Llama saved as a Hugging Face folder, through
  the same ``from_pretrained`` path as any base model (config.json,
  model.safetensors, tokenizer.json, chat_template.jinja). Its answers are random
  but deterministic, which is all the tests of batching, adapters, streaming and
  feedback need.
- ``build_random_adapter``: a LoRA that changes greedy answers;
  ``UNSERVABLE`` and ``adapter_with_config``: adapters the engine must refuse,
  one per refusal (issue 10), each a served adapter (q_proj and v_proj, rank 8)
  with one field of its ``adapter_config.json`` changed; with the server's
  defaults (targets q_proj and v_proj, TAILOR_MAX_LORA_RANK=16) every one must
  be refused with the field named.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from benchmarks.serve import make_random_adapter
from contracts.modeling import small_llama_config

# --- in-memory: the learners' tiny Llama -------------------------------------------------

PAD_ID, EOS_ID = 0, 1
VOCAB_SIZE = 100


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: `<pad>`=0, `<eos>`=1, words `t0` … `t97` = 2 … 99."""
    vocab = {"<pad>": PAD_ID, "<eos>": EOS_ID, **{f"t{i}": i + 2 for i in range(VOCAB_SIZE - 2)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")


def tiny_llama(seed: int = 0, hidden_size: int = 32, num_layers: int = 2) -> LlamaForCausalLM:
    """A randomly initialised Llama (fp32, eval mode) with the tokenizer's vocabulary."""
    torch.manual_seed(seed)
    # initializer_range wide enough that a LoRA can move the logits by several nats
    config = small_llama_config(VOCAB_SIZE, hidden_size, num_layers, max_positions=256,
                                pad_token_id=PAD_ID, eos_token_id=EOS_ID, initializer_range=0.2)
    return LlamaForCausalLM(config).eval()


# --- on disk: the serving model and its adapters ------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
CORPUS = [
    "how do I boil an egg",
    "put the egg in boiling water for seven minutes",
    "my house is too hot, what can I do",
    "open the windows at night and close the blinds by day",
    "name for my cat: Miso, Pixel or Biscuit",
] * 20


def build_serving_model(out: Path, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<|pad|>", eos_token="<|end|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = small_llama_config(len(tokenizer), hidden_size, layers,
                                pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id, initializer_range=0.1)
    model = LlamaForCausalLM(config)
    # EOS's logit is pinned at 0 (a zero row) while ~400 others spread around it:
    # greedy answers never end early, so comparisons see every token.
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = 0.0
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_random_adapter(
    base_dir: Path, out: Path, seed: int, targets: list[str] | None = None, rank: int = 8
) -> Path:
    """A peft LoRA adapter with random A *and* B, large enough to change greedy answers."""
    return make_random_adapter(base_dir, out, seed, targets or ["q_proj", "v_proj"], rank,
                               alpha=2 * rank, scale=0.3)


# --- adapters the engine cannot serve ---------------------------------------------------

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
