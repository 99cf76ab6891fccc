"""A tiny random Llama saved as a Hugging Face folder, for tests of the serving path.

It goes through the same ``from_pretrained`` path as any base model (config.json,
model.safetensors, tokenizer.json, chat_template.jinja), builds in about a
second, and needs no download. Its answers are random but deterministic, which
is all the tests of batching, adapters, streaming and feedback need.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from benchmarks.serve import make_random_adapter
from contracts.modeling import small_llama_config

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
