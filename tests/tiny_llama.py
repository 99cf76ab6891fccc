"""A tiny random Llama and a word-level tokenizer for tests: no downloads, built in ~0.1 s."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from contracts.modeling import small_llama_config

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
