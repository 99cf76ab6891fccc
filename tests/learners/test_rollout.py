"""Rollout layout (padding, EOS masks, positions); sampling is plain temperature sampling."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from learners.ppo import forward_response
from learners.ppo_config import PPOConfig
from learners.ppo_math import response_logprobs
from learners.rollout import (
    Rollout,
    left_pad_prompts,
    position_ids_from_mask,
    response_mask_up_to_eos,
    sample_responses,
    sampling_config,
)
from tests.builders import EOS_ID, PAD_ID, tiny_llama

torch.set_num_threads(1)


def test_left_pad_prompts_pads_left_and_keeps_the_end_of_long_prompts():
    ids, mask = left_pad_prompts([[5, 6, 7, 8, 9], [3]], PAD_ID, 3, torch.device("cpu"))
    assert ids.tolist() == [[7, 8, 9], [PAD_ID, PAD_ID, 3]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="at least one token"):
        left_pad_prompts([[5], []], PAD_ID, 3, torch.device("cpu"))


def test_response_mask_covers_tokens_up_to_and_including_the_first_eos():
    responses = torch.tensor([[4, EOS_ID, 0, EOS_ID], [4, 5, 6, 7], [EOS_ID, 0, 0, 0]])
    mask, ended = response_mask_up_to_eos(responses, EOS_ID)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_position_ids_count_real_tokens_only():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


def test_rollout_lists_drop_padding_and_the_final_eos():
    rollout = Rollout(
        input_ids=torch.tensor([[PAD_ID, 5, 6, 7, EOS_ID, PAD_ID], [8, 9, 10, 11, 12, 13]]),
        attention_mask=torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]),
        response_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]),
        ended_with_eos=torch.tensor([True, False]),
        context_length=3,
        eos_token_id=EOS_ID,
    )
    assert rollout.prompt_lists() == [[5, 6], [8, 9, 10]]
    assert rollout.response_lists() == [[7], [11, 12, 13]]
    assert rollout.full_response_mask.tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]]


def test_sample_responses_layout_and_eos_bookkeeping():
    policy = get_peft_model(tiny_llama(seed=0), PPOConfig().lora_config())
    prompts = [[5, 6, 7, 8], [9], [10, 11]] * 8
    torch.manual_seed(0)
    rollout = sample_responses(
        policy, prompts, eos_token_id=EOS_ID, pad_token_id=PAD_ID, max_new_tokens=32
    )
    assert rollout.context_length == 4
    assert rollout.input_ids.shape == rollout.attention_mask.shape
    assert rollout.response_mask.shape == rollout.response_ids.shape
    assert rollout.prompt_lists() == prompts
    responses = rollout.response_ids
    for row in range(len(prompts)):
        tokens = responses[row].tolist()
        length = int(rollout.response_mask[row].sum())
        if rollout.ended_with_eos[row]:
            assert tokens.index(EOS_ID) == length - 1
            assert all(token == PAD_ID for token in tokens[length:])
        else:
            assert EOS_ID not in tokens and length == 32
    # with this seed both kinds of rows occur (EOS is ~1 % per token, 32 tokens a row)
    assert 0 < int(rollout.ended_with_eos.sum()) < len(prompts)


def test_sample_responses_is_reproducible_under_a_seed():
    policy = tiny_llama(seed=0)
    prompts = [[5, 6, 7], [8, 9]]
    draws = []
    for _ in range(2):
        torch.manual_seed(7)
        draws.append(
            sample_responses(
                policy, prompts, eos_token_id=EOS_ID, pad_token_id=PAD_ID, max_new_tokens=8
            )
        )
    assert torch.equal(draws[0].input_ids, draws[1].input_ids)


def test_sampling_distribution_is_softmax_of_logits_over_temperature():
    """`generate`'s final scores equal our temperature-scaled log-softmax at every step, even when
    the model's own generation_config asks for top-k, top-p and a repetition penalty."""
    model = tiny_llama(seed=1)
    model.generation_config.top_k = 5
    model.generation_config.top_p = 0.5
    model.generation_config.repetition_penalty = 1.5
    policy = get_peft_model(model, PPOConfig().lora_config())
    with torch.no_grad():  # a non-zero adapter: the sampled distribution must include it
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.3)
    temperature = 0.7
    prompts = [[5, 6, 7, 8], [9, 10]]
    prompt_ids, prompt_mask = left_pad_prompts(prompts, PAD_ID, 64, torch.device("cpu"))
    torch.manual_seed(0)
    with torch.no_grad():
        output = policy.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            generation_config=sampling_config(6, temperature, EOS_ID, PAD_ID),
            output_scores=True,
            return_dict_in_generate=True,
        )
    response_ids = output.sequences[:, prompt_ids.shape[1] :]
    response_mask, ended = response_mask_up_to_eos(response_ids, EOS_ID)
    rollout = Rollout(
        input_ids=torch.cat([prompt_ids, response_ids], dim=1),
        attention_mask=torch.cat([prompt_mask, response_mask], dim=1),
        response_mask=response_mask,
        ended_with_eos=ended,
        context_length=prompt_ids.shape[1],
        eos_token_id=EOS_ID,
    )
    with torch.no_grad():
        logits, _ = forward_response(policy, rollout)  # (B, R, V)
    sampler_log_probs = torch.log_softmax(torch.stack(output.scores, dim=1), dim=-1)
    ours = torch.log_softmax(logits / temperature, dim=-1)
    real = response_mask.bool()
    assert torch.allclose(sampler_log_probs[real], ours[real], atol=1e-4)
    assert torch.allclose(
        response_logprobs(logits, response_ids, temperature)[real],
        sampler_log_probs.gather(2, response_ids.unsqueeze(-1)).squeeze(-1)[real],
        atol=1e-4,
    )
