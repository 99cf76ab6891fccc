"""Rollouts for PPO: sample one response per prompt from the policy, with a KV cache.

Layout of a rollout batch (P prompt columns, R response columns):

    input_ids       [pad pad p p p p | r r r EOS pad pad]   prompts left-padded,
    attention_mask  [ 0   0  1 1 1 1 | 1 1 1  1   0   0 ]   responses right-padded
    response_mask                     [1 1 1  1   0   0 ]   (B, R): tokens up to and incl. EOS

Left-padded prompts put every response at the same column P, so the log-prob of
response token j is read from the logits at column P - 1 + j for every row.
Sampling is plain temperature sampling (no top-k/top-p, no repetition penalty,
whatever the model's `generation_config` says), because PPO's ratio assumes the
responses were drawn from exactly softmax(logits / temperature).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig


@dataclass
class Rollout:
    """Prompts and sampled responses of one PPO batch, as padded tensors."""

    input_ids: torch.Tensor  # (B, P + R) prompt (left-padded) then response (right-padded)
    attention_mask: torch.Tensor  # (B, P + R) 1 on real prompt and response tokens
    response_mask: torch.Tensor  # (B, R) 1 on response tokens up to and including the first EOS
    ended_with_eos: torch.Tensor  # (B,) bool: the response stopped at EOS (not at the limit)
    context_length: int  # P: the column where every response starts
    eos_token_id: int  # the token that ends a response

    @property
    def response_ids(self) -> torch.Tensor:
        """(B, R) the sampled tokens; after EOS they are padding."""
        return self.input_ids[:, self.context_length :]

    @property
    def full_response_mask(self) -> torch.Tensor:
        """(B, P + R) 1 on response tokens, 0 on prompt and padding."""
        prompt_part = torch.zeros_like(self.input_ids[:, : self.context_length])
        return torch.cat([prompt_part, self.response_mask.to(self.input_ids.dtype)], dim=1)

    def rows(self, which: torch.Tensor | slice) -> Rollout:
        """The rollout of some of its rows (a bool mask, indices or a slice)."""
        return dataclasses.replace(
            self, input_ids=self.input_ids[which], attention_mask=self.attention_mask[which],
            response_mask=self.response_mask[which], ended_with_eos=self.ended_with_eos[which])

    def prompt_lists(self) -> list[list[int]]:
        """Each row's real prompt tokens (padding dropped)."""
        prompt_ids = self.input_ids[:, : self.context_length]
        prompt_mask = self.attention_mask[:, : self.context_length].bool()
        return [row[mask].tolist() for row, mask in zip(prompt_ids, prompt_mask, strict=True)]

    def response_lists(self) -> list[list[int]]:
        """Each row's response tokens without the final EOS and padding: the completion text."""
        text_mask = self.response_mask.bool() & (self.response_ids != self.eos_token_id)
        return [row[mask].tolist() for row, mask in zip(self.response_ids, text_mask, strict=True)]


def left_pad_prompts(
    prompts: list[list[int]], pad_token_id: int, max_prompt_tokens: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P) ids and attention mask of ``prompts``, left-padded; a long prompt keeps its end."""
    if not prompts or any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("prompts: give at least one prompt, each with at least one token.")
    kept = [prompt[-max_prompt_tokens:] for prompt in prompts]
    width = max(len(prompt) for prompt in kept)
    input_ids = torch.full((len(kept), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(kept), width), dtype=torch.long)
    for row, prompt in enumerate(kept):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def response_mask_up_to_eos(
    response_ids: torch.Tensor, eos_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask (B, R) of tokens up to and including each row's first EOS, and whether it had one."""
    is_eos = response_ids == eos_token_id  # (B, R)
    # Number of EOS tokens strictly before each column: 0 means the column is still in the response.
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    response_mask = (eos_before == 0).long()
    return response_mask, is_eos.any(dim=1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as HF `generate` does for left padding."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def sampling_config(
    max_new_tokens: int, temperature: float, eos_token_id: int, pad_token_id: int
) -> GenerationConfig:
    """Plain temperature sampling; every logits warper is set to its neutral value explicitly,
    because `generate` fills unset ones from the model's `generation_config` (top_k=50 by default).
    """
    return GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_new_tokens=0,
        max_new_tokens=max_new_tokens,
        num_beams=1,
        num_return_sequences=1,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        use_cache=True,
        bad_words_ids=None,
        suppress_tokens=[],
        begin_suppress_tokens=[],
        forced_bos_token_id=None,
        forced_eos_token_id=None,
        renormalize_logits=False,
    )


@torch.no_grad()
def sample_responses(
    policy: nn.Module,
    prompts: list[list[int]],
    *,
    eos_token_id: int,
    pad_token_id: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    max_prompt_tokens: int = 64,
    adapter_names: list[str] | None = None,
) -> Rollout:
    """Sample one response per prompt from ``policy`` (its active adapter on; with
    ``adapter_names``, one peft adapter per prompt) with `generate`.

    Randomness comes from torch's global generator: seed it for a reproducible rollout.
    """
    device = next(policy.parameters()).device
    prompt_ids, prompt_mask = left_pad_prompts(prompts, pad_token_id, max_prompt_tokens, device)
    config = sampling_config(max_new_tokens, temperature, eos_token_id, pad_token_id)
    per_row = {} if adapter_names is None else {"adapter_names": adapter_names}
    sequences = policy.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config, **per_row
    )  # (B, P + R), R <= max_new_tokens
    context_length = prompt_ids.shape[1]
    response_ids = sequences[:, context_length:]
    response_mask, ended_with_eos = response_mask_up_to_eos(response_ids, eos_token_id)
    # Tokens after EOS are already pad from `generate`; make it so for any pad choice.
    response_ids = torch.where(response_mask.bool(), response_ids, pad_token_id)
    return Rollout(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, response_mask], dim=1),
        response_mask=response_mask,
        ended_with_eos=ended_with_eos,
        context_length=context_length,
        eos_token_id=eos_token_id,
    )
