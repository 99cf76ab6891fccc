"""A tiny random Llama and a word-level tokenizer for tests: no downloads, built in ~0.1 s."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=None,
        initializer_range=0.2,  # wide enough that a LoRA can move the logits by several nats
    )
    return LlamaForCausalLM(config).eval()
