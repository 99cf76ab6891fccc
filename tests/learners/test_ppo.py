"""PPO math against hand-computed values and plain loops; `ppo_update` on a tiny random Llama."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import torch
from peft import PeftModel, get_peft_model

from contracts.features import sequence_features
from learners.anchor import load_anchor, load_lora, lora_state
from learners.ppo import PPOMember, make_optimizer, ppo_update, ppo_update_batch, reference_forward
from learners.ppo_config import PPOConfig
from learners.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    apply_missing_eos_penalty,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    exact_kl,
    gae_advantages,
    grouped_whiten,
    kl_k1,
    kl_k3,
    make_kl_controller,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_kl,
    response_logprobs,
    shaped_rewards,
)
from learners.rollout import sample_responses
from learners.value_head import ValueHead
from tests.builders import EOS_ID, PAD_ID, tiny_llama, tiny_tokenizer

torch.set_num_threads(1)


@pytest.fixture
def tokenizer():
    return tiny_tokenizer()


def make_policy(config: PPOConfig, seed: int = 0) -> PeftModel:
    return get_peft_model(tiny_llama(seed), config.lora_config())


def random_prompts(count: int, length: int, seed: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(2, 100, (length,), generator=generator).tolist() for _ in range(count)]


# --- masked statistics --------------------------------------------------------------


def test_masked_mean_ignores_masked_entries():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    assert masked_mean(values, mask, dim=1).tolist() == pytest.approx([1.5, 3.0])


def test_masked_whiten_hand_computed():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 2, unbiased variance ((1 + 0 + 1) / 2) = 1 -> z-scores -1, 0, 1; masked entry -> 0
    assert masked_var(values, mask).item() == pytest.approx(1.0)
    assert masked_whiten(values, mask).tolist()[0] == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    # shift_mean=False rescales but keeps the mean
    assert masked_whiten(values, mask, shift_mean=False).tolist()[0] == pytest.approx(
        [1.0, 2.0, 3.0, 0.0], abs=1e-6
    )


def test_grouped_whiten_gives_each_group_its_own_scale():
    # group 0's advantages spread by 1, group 1's (red-team rows: penalties) by 100
    values = torch.tensor([[1.0, 2.0, 3.0], [100.0, 200.0, 300.0], [5.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 0, 0]])
    whitened = grouped_whiten(values, mask, torch.tensor([0, 1, 0]))
    assert whitened[[0, 2]].tolist() == masked_whiten(values[[0, 2]], mask[[0, 2]]).tolist()
    assert whitened[1].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    # together, group 0's differences would all but vanish under group 1's scale
    def spread(row):
        return (row.max() - row.min()).item()
    assert spread(masked_whiten(values, mask)[0]) < 0.05 * spread(whitened[0])


# --- GAE ----------------------------------------------------------------------------


def plain_gae(rewards: list[float], values: list[float], lam: float) -> list[float]:
    """GAE with γ = 1 for one episode, straight from the definition (sum of λ^k δ_{t+k})."""
    deltas = [
        rewards[t] + (values[t + 1] if t + 1 < len(values) else 0.0) - values[t]
        for t in range(len(rewards))
    ]
    return [sum(lam**k * deltas[t + k] for k in range(len(deltas) - t)) for t in range(len(deltas))]


def test_gae_matches_plain_loop_on_ragged_batch():
    rng = random.Random(0)
    lengths, width, lam = [5, 1, 3, 5], 5, 0.9
    rewards = torch.randn(len(lengths), width, generator=torch.Generator().manual_seed(0))
    values = torch.randn(len(lengths), width, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    # garbage past the end must not leak in
    rewards = torch.where(mask.bool(), rewards, torch.tensor(rng.uniform(50, 60)))
    advantages, returns = gae_advantages(rewards, values, mask, gae_lambda=lam)
    for row, length in enumerate(lengths):
        expected = plain_gae(rewards[row, :length].tolist(), values[row, :length].tolist(), lam)
        assert advantages[row, :length].tolist() == pytest.approx(expected, abs=1e-5)
        assert advantages[row, length:].abs().sum().item() == 0.0
        assert returns[row, :length].tolist() == pytest.approx(
            (advantages[row, :length] + values[row, :length]).tolist(), abs=1e-6
        )


def test_gae_lambda_one_gives_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 0.75]])
    advantages, returns = gae_advantages(rewards, values, torch.ones(1, 3), gae_lambda=1.0)
    assert advantages.tolist()[0] == pytest.approx([0.5, 0.75, 0.25])
    assert returns.tolist()[0] == pytest.approx([1.0, 1.0, 1.0])


# --- losses -------------------------------------------------------------------------


def test_clipped_policy_loss_hand_computed():
    # ratios 1.5, 0.5, 1.5, 0.5 with advantages +1, +1, -1, -1 and ε = 0.2:
    # max(-1.5, -1.2) = -1.2 (clipped); max(-0.5, -0.8) = -0.5; max(1.5, 1.2) = 1.5;
    # max(0.5, 0.8) = 0.8 (clipped); the fifth entry is masked out.
    ratios = torch.tensor([[1.5, 0.5, 1.5, 0.5, 9.0]])
    old_logprobs = torch.full((1, 5), -2.0)
    logprobs = old_logprobs + ratios.log()
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, clip_fraction = clipped_policy_loss(logprobs, old_logprobs, advantages, mask, 0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.5 + 0.8) / 4, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(0.5)


def test_clipped_value_loss_hand_computed():
    # old 0, c = 0.2, return 1: V = 0.5 -> clipped 0.2: max(0.25, 0.64) = 0.64 (clipped);
    # V = 0.1 -> inside: 0.81; V = -1 -> clipped -0.2: max(4, 1.44) = 4 (unclipped counts).
    values = torch.tensor([[0.5, 0.1, -1.0, 7.0]])
    old_values = torch.zeros(1, 4)
    returns = torch.ones(1, 4)
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clip_fraction = clipped_value_loss(values, old_values, returns, mask, 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81 + 4.0) / 3, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(1 / 3)


# --- KL, log-probs, entropy ---------------------------------------------------------


def test_kl_estimators_hand_values():
    logprobs = torch.tensor([math.log(0.5), math.log(0.2)])
    ref_logprobs = torch.tensor([math.log(0.25), math.log(0.4)])
    # k1 = log p - log q; k3 = (q/p - 1) - log(q/p)
    assert kl_k1(logprobs, ref_logprobs).tolist() == pytest.approx([math.log(2), math.log(0.5)])
    assert kl_k3(logprobs, ref_logprobs).tolist() == pytest.approx(
        [(0.5 - 1) - math.log(0.5), (2 - 1) - math.log(2)]
    )
    assert torch.equal(per_token_kl(logprobs, ref_logprobs, "k3"), kl_k3(logprobs, ref_logprobs))
    with pytest.raises(ValueError, match="k2"):
        per_token_kl(logprobs, ref_logprobs, "k2")


def test_kl_estimators_are_unbiased_for_categorical_kl():
    generator = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=generator), dim=0)
    q = torch.softmax(torch.randn(6, generator=generator), dim=0)
    exact = (p * (p / q).log()).sum().item()
    samples = torch.multinomial(p, 200_000, replacement=True, generator=generator)
    logp, logq = p.log()[samples], q.log()[samples]
    assert kl_k1(logp, logq).mean().item() == pytest.approx(exact, abs=0.01)
    assert kl_k3(logp, logq).mean().item() == pytest.approx(exact, abs=0.01)
    assert kl_k3(logp, logq).min().item() >= 0.0


def test_exact_kl_is_the_categorical_kl_at_each_position():
    generator = torch.Generator().manual_seed(0)
    log_p = torch.log_softmax(torch.randn(2, 3, 6, generator=generator), dim=-1)
    log_q = torch.log_softmax(torch.randn(2, 3, 6, generator=generator), dim=-1)
    result = exact_kl(log_p, log_q)
    assert result.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            p, q = log_p[b, t].exp().tolist(), log_q[b, t].exp().tolist()
            expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
            assert result[b, t].item() == pytest.approx(expected, abs=1e-5)
    assert torch.allclose(exact_kl(log_p, log_p), torch.zeros(2, 3), atol=1e-6)


def test_response_logprobs_divide_by_temperature_like_a_plain_loop():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=generator)
    tokens = torch.randint(0, 7, (2, 3), generator=generator)
    temperature = 0.7
    result = response_logprobs(logits, tokens, temperature)
    for b in range(2):
        for t in range(3):
            scaled = [x / temperature for x in logits[b, t].tolist()]
            log_normaliser = math.log(sum(math.exp(x) for x in scaled))
            expected = scaled[tokens[b, t]] - log_normaliser
            assert result[b, t].item() == pytest.approx(expected, abs=1e-5)
    assert not torch.allclose(result, response_logprobs(logits, tokens, 1.0))


def test_entropy_from_logits_hand_computed():
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, 5.0]])  # p = (1/4, 3/4) and (1/2, 1/2)
    expected_first = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert entropy_from_logits(logits).tolist() == pytest.approx([expected_first, math.log(2)])
    assert entropy_from_logits(torch.zeros(10)).item() == pytest.approx(math.log(10))


# --- rewards and β ------------------------------------------------------------------


def test_shaped_rewards_put_score_on_last_real_token_and_kl_everywhere():
    scores = torch.tensor([2.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    rewards = shaped_rewards(scores, kl, mask, kl_coef=0.5)
    assert rewards.tolist()[0] == pytest.approx([-0.05, -0.1, -0.15 + 2.0])
    assert rewards.tolist()[1] == pytest.approx([-0.2 - 1.0, 0.0, 0.0])


def test_shaped_rewards_take_one_beta_per_row():
    kl = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    rewards = shaped_rewards(torch.zeros(2), kl, torch.ones(2, 2), kl_coef=torch.tensor([0.1, 0.5]))
    assert rewards.tolist() == [pytest.approx([-0.1, -0.1]), pytest.approx([-0.5, -0.5])]


def test_missing_eos_penalty_hits_only_unfinished_responses():
    scores = torch.tensor([1.0, 2.0, 0.5])
    ended = torch.tensor([True, False, True])
    penalised = apply_missing_eos_penalty(scores, ended, 0.75)
    assert penalised.tolist() == pytest.approx([1.0, 1.25, 0.5])


def test_adaptive_kl_controller_follows_ziegler_update():
    controller = AdaptiveKLController(value=0.1, target=6.0, horizon=10_000)
    controller.update(current_kl=9.0, n_steps=8)  # error 0.5 clipped to 0.2
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 8 / 10_000))
    controller = AdaptiveKLController(value=0.1, target=6.0, horizon=100)
    controller.update(current_kl=5.4, n_steps=10)  # error -0.1, not clipped
    assert controller.value == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))
    controller.update(current_kl=0.0, n_steps=10)  # error -1 clipped to -0.2
    assert controller.value == pytest.approx(0.1 * 0.99 * 0.98)


def test_fixed_kl_controller_and_factory():
    fixed = FixedKLController(0.05)
    fixed.update(current_kl=100.0, n_steps=64)
    assert fixed.value == 0.05
    assert isinstance(make_kl_controller(PPOConfig()), FixedKLController)
    adaptive = make_kl_controller(PPOConfig(kl_target=3.0), kl_coef=0.2)
    assert isinstance(adaptive, AdaptiveKLController) and adaptive.value == 0.2


def test_config_errors_name_the_field_and_the_fix():
    with pytest.raises(ValueError, match=r"PPOConfig.clip_range=-0.1: must be a number > 0"):
        PPOConfig(clip_range=-0.1)
    with pytest.raises(ValueError, match=r"PPOConfig.gae_lambda=1.5.*\[0, 1\]"):
        PPOConfig(gae_lambda=1.5)
    with pytest.raises(ValueError, match=r"PPOConfig.kl_estimator='k2'.*'k1'"):
        PPOConfig(kl_estimator="k2")
    with pytest.raises(ValueError, match=r"PPOConfig.kl_loss_coef=-1.*>= 0"):
        PPOConfig(kl_loss_coef=-1)
    with pytest.raises(ValueError, match=r"PPOConfig.target_kl=0: must be a number > 0"):
        PPOConfig(target_kl=0)
    with pytest.raises(ValueError, match=r"PPOConfig.lora_target_modules=\(\).*q_proj"):
        PPOConfig(lora_target_modules=())
    assert PPOConfig().lora_config().target_modules == {"q_proj", "k_proj", "v_proj", "o_proj"}


# --- the model side -----------------------------------------------------------------


def test_disable_adapter_gives_exactly_the_base_logits():
    base = tiny_llama(seed=3)
    input_ids = torch.randint(2, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_logits = base(input_ids=input_ids).logits
    policy = get_peft_model(base, PPOConfig().lora_config())
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:  # peft starts B at 0; make the adapter do something
                parameter.normal_(0.0, 0.5)
        adapted_logits = policy(input_ids=input_ids).logits
        with policy.disable_adapter():
            reference_logits = policy(input_ids=input_ids).logits
    assert (adapted_logits - base_logits).abs().max().item() > 1e-2
    assert torch.equal(reference_logits, base_logits)


def test_value_head_starts_at_zero():
    policy = make_policy(PPOConfig())
    head = ValueHead.for_model(policy)
    assert head(torch.randn(2, 5, 32)).abs().sum().item() == 0.0
    assert head(torch.randn(2, 5, 32, dtype=torch.bfloat16)).dtype == torch.float32


def test_make_optimizer_puts_the_critic_on_its_own_learning_rate():
    config = PPOConfig(learning_rate=1e-3)
    policy = make_policy(config)
    value_head = ValueHead.for_model(policy)
    lora = {id(p) for p in policy.parameters() if p.requires_grad}
    critic = {id(p) for p in value_head.parameters()}
    optimizer = make_optimizer(policy, value_head, config, value_learning_rate=1e-2)
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates.keys() == lora | critic  # every trainable parameter, no frozen one
    assert {rates[i] for i in lora} == {1e-3} and {rates[i] for i in critic} == {1e-2}
    default = make_optimizer(policy, value_head, config)  # no rate given: the LoRA's
    assert {group["lr"] for group in default.param_groups} == {1e-3}


def test_reference_forward_gives_the_base_models_logprobs_and_features_of_each_row():
    """Against the base model run on each row alone (no padding), sliced by hand."""
    temperature = 0.7
    config = PPOConfig(max_new_tokens=6, temperature=temperature)
    base = tiny_llama(seed=4)
    policy = get_peft_model(tiny_llama(seed=4), config.lora_config())
    with torch.no_grad():  # a non-zero adapter, so "the base model" is a real constraint
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    torch.manual_seed(0)
    rollout = sample_responses(policy, [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]],
                               eos_token_id=EOS_ID, pad_token_id=PAD_ID, max_new_tokens=6,
                               temperature=temperature)
    ref_logprobs, features = reference_forward(policy, rollout, temperature)  # (B, R), (B, 2H)
    real = rollout.response_mask.bool()
    for row, prompt in enumerate(rollout.prompt_lists()):
        response = rollout.response_ids[row][real[row]].tolist()  # EOS included, if any
        sequence = torch.tensor([prompt + response])
        with torch.no_grad():
            log_probs = torch.log_softmax(base(input_ids=sequence).logits[0] / temperature, -1)
        # Position t predicts token t + 1: response token j is predicted at len(prompt) − 1 + j.
        predicting = log_probs[len(prompt) - 1 : -1]  # (len(response), V)
        expected = predicting.gather(1, torch.tensor(response)[:, None])[:, 0]
        assert torch.allclose(ref_logprobs[row, : len(response)], expected, atol=1e-4)
        feature_mask = torch.tensor([[0] * len(prompt) + [1] * len(response)])
        alone = sequence_features(base, sequence, torch.ones_like(sequence), feature_mask)
        assert torch.allclose(features[row], alone[0], atol=1e-5)


def test_ppo_update_changes_every_trainable_parameter_and_nothing_else(tokenizer):
    config = PPOConfig(max_new_tokens=6, ppo_epochs=2, num_minibatches=2, learning_rate=1e-3)
    policy = make_policy(config)
    value_head = ValueHead.for_model(policy)
    optimizer = make_optimizer(policy, value_head, config)
    named = dict(policy.named_parameters())
    named |= {f"value_head.{k}": v for k, v in value_head.named_parameters()}
    before = {name: parameter.detach().clone() for name, parameter in named.items()}
    trainable = {name for name, parameter in named.items() if parameter.requires_grad}
    assert any("lora_A" in n for n in trainable) and "value_head.linear.weight" in trainable
    assert all("lora_" in n or n.startswith("value_head.") for n in trainable)

    def reward_fn(prompt_ids, response_ids, features):  # varies across rows: share of even ids
        return torch.tensor([sum(t % 2 == 0 for t in r) / max(len(r), 1) for r in response_ids])

    torch.manual_seed(0)
    stats = ppo_update(
        policy, value_head, optimizer, tokenizer, random_prompts(8, 5, seed=0), reward_fn, config
    )
    unchanged_trainable = [n for n in trainable if torch.equal(named[n], before[n])]
    frozen = [n for n in named if n not in trainable]
    changed_frozen = [n for n in frozen if not torch.equal(named[n], before[n])]
    assert unchanged_trainable == []
    assert changed_frozen == []  # base weights bit-identical
    assert stats.response_tokens > 0 and stats.tokens > stats.response_tokens
    for field in ("policy_loss", "value_loss", "entropy", "approx_kl", "kl", "reward", "seconds"):
        assert math.isfinite(getattr(stats, field)), field


def test_reward_fn_gets_unpadded_rows_and_base_model_features(tokenizer):
    """The features reused from the reference pass equal `sequence_features` of each row alone."""
    config = PPOConfig(max_new_tokens=6, ppo_epochs=1, num_minibatches=1)
    policy = make_policy(config)
    with torch.no_grad():  # a non-zero adapter, so "base-model features" is a real constraint
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    value_head = ValueHead.for_model(policy)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    seen = {}

    def reward_fn(prompt_ids, response_ids, features):
        seen.update(prompts=prompt_ids, responses=response_ids, features=features.clone())
        return torch.zeros(len(prompt_ids))

    torch.manual_seed(0)
    ppo_update(policy, value_head, make_optimizer(policy, value_head, config), tokenizer, prompts,
               reward_fn, config)
    assert seen["prompts"] == prompts
    for row, (prompt, response) in enumerate(zip(prompts, seen["responses"], strict=True)):
        assert EOS_ID not in response and PAD_ID not in response and len(response) <= 6
        ended = len(response) < 6  # a shorter response stopped at EOS (stripped from the list)
        sequence = prompt + response + ([EOS_ID] if ended else [])
        input_ids = torch.tensor([sequence])
        feature_mask = torch.tensor([[0] * len(prompt) + [1] * (len(sequence) - len(prompt))])
        alone = sequence_features(policy, input_ids, torch.ones_like(input_ids), feature_mask)
        assert torch.allclose(seen["features"][row], alone[0], atol=1e-5)


def test_missing_eos_penalty_lowers_reward_in_ppo_update(tokenizer):
    """With 1-token responses almost none reach EOS: mean reward drops by penalty × that share."""
    stats = {}
    for penalty in (0.0, 2.0):
        config = PPOConfig(max_new_tokens=1, ppo_epochs=1, num_minibatches=1,
                           missing_eos_penalty=penalty, kl_coef=0.0)
        policy = make_policy(config)
        value_head = ValueHead.for_model(policy)
        torch.manual_seed(0)
        stats[penalty] = ppo_update(
            policy, value_head, make_optimizer(policy, value_head, config), tokenizer,
            random_prompts(4, 3, seed=1), lambda p, r, f: torch.ones(len(p)), config,
        )
    assert stats[2.0].eos_fraction == stats[0.0].eos_fraction  # same seed, same rollouts
    unfinished = 1.0 - stats[0.0].eos_fraction
    assert unfinished > 0
    assert stats[0.0].reward - stats[2.0].reward == pytest.approx(2.0 * unfinished, abs=1e-6)
    assert stats[0.0].score == stats[2.0].score == 1.0


def test_a_members_kl_weights_scale_beta_on_its_rows(tokenizer):
    """The same rollouts (seeded) with every row's β tripled lose three times the KL
    reward; weights of 0 lose none; a weight per prompt is required."""
    config = PPOConfig(max_new_tokens=6, ppo_epochs=1, num_minibatches=1, kl_coef=0.5,
                       missing_eos_penalty=0.0)
    prompts = random_prompts(6, 4, seed=2)
    rewards = {}
    for name, weights in (("plain", None), ("tripled", [3.0] * 6), ("free", [0.0] * 6)):
        policy = make_policy(config)
        with torch.no_grad():  # far from the base model: the KL is not zero
            for parameter_name, parameter in policy.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(3))
        value_head = ValueHead.for_model(policy)
        member = PPOMember(prompts, lambda p, r, f: torch.zeros(len(p)), value_head,
                           make_optimizer(policy, value_head, config), kl_weights=weights)
        torch.manual_seed(0)
        (stats,) = ppo_update_batch(policy, tokenizer, [member], config)
        rewards[name] = (stats.reward, stats.kl)
    assert rewards["plain"][1] == rewards["tripled"][1] > 0.5  # the same rollouts
    assert rewards["plain"][0] == pytest.approx(-0.5 * rewards["plain"][1], rel=1e-5)
    assert rewards["tripled"][0] == pytest.approx(3.0 * rewards["plain"][0], rel=1e-5)
    assert rewards["free"][0] == pytest.approx(0.0, abs=1e-6)
    policy = make_policy(config)
    value_head = ValueHead.for_model(policy)
    lopsided = PPOMember(prompts, lambda p, r, f: torch.zeros(len(p)), value_head,
                         make_optimizer(policy, value_head, config), kl_weights=[1.0] * 5)
    with pytest.raises(ValueError, match="5 kl_weights for 6 prompts"):
        ppo_update_batch(policy, tokenizer, [lopsided], config)


def test_ppo_update_refuses_non_finite_rewards_and_misplaced_groups_before_any_step(tokenizer):
    config = PPOConfig(max_new_tokens=2, ppo_epochs=1, num_minibatches=1)
    policy = make_policy(config)
    value_head = ValueHead.for_model(policy)
    before = {k: v.clone() for k, v in policy.state_dict().items() if "lora_" in k}
    optimizer = make_optimizer(policy, value_head, config)
    prompts = random_prompts(4, 3, seed=1)
    with pytest.raises(ValueError, match="non-finite scores for 1 of 4 rows"):
        ppo_update(policy, value_head, optimizer, tokenizer, prompts,
                   lambda p, r, f: torch.tensor([0.0, float("nan"), 1.0, 2.0]), config)
    with pytest.raises(ValueError, match="3 row_groups for 4 prompts"):
        ppo_update(policy, value_head, optimizer, tokenizer, prompts,
                   lambda p, r, f: torch.ones(len(p)), config, row_groups=[0, 0, 1])
    after = {k: v for k, v in policy.state_dict().items() if "lora_" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)


TARGET_TOKEN = 19  # the tiny model's most frequent sampled token (~3.6 % of response tokens)


def target_token_frequency(policy: PeftModel, prompts: list[list[int]]) -> float:
    torch.manual_seed(123)  # same evaluation samples before and after
    rollout = sample_responses(
        policy, prompts * 4, eos_token_id=EOS_ID, pad_token_id=PAD_ID, max_new_tokens=8
    )
    tokens = rollout.response_ids[rollout.response_mask.bool()]
    return (tokens == TARGET_TOKEN).float().mean().item()


def test_target_kl_ends_the_steps_once_the_policy_moved_that_far(tokenizer):
    """The first minibatch measures the policy that sampled (approx KL ~0) and steps; with a
    target of 1e-9 the second measures the moved policy past it and the iteration ends.
    With a target no step reaches, the update is the one with no target, weight for weight."""
    config = PPOConfig(max_new_tokens=6, ppo_epochs=2, num_minibatches=2, learning_rate=1e-3)

    def reward_fn(prompt_ids, response_ids, features):
        return torch.tensor([sum(t % 2 == 0 for t in r) / max(len(r), 1) for r in response_ids])

    states, steps = [], []
    for target_kl in (1e-9, 1e9, None):
        run = replace(config, target_kl=target_kl)
        policy = make_policy(run)
        value_head = ValueHead.for_model(policy)
        torch.manual_seed(0)
        stats = ppo_update(policy, value_head, make_optimizer(policy, value_head, run),
                           tokenizer, random_prompts(8, 5, seed=0), reward_fn, run)
        states.append(lora_state(policy, "default"))
        steps.append(stats.steps)
    assert steps == [1, 4, 4]
    assert all(torch.equal(states[1][k], states[2][k]) for k in states[2])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[2])


def test_the_exact_kl_loss_keeps_the_policy_nearer_the_reference(tokenizer):
    """Three updates on a reward with no KL in it: with the exact-KL loss term the rollouts'
    exact KL to the base model stays far lower than without. The first update's rollouts come
    from the fresh LoRA (B = 0), the base model itself: 0 nats both ways."""
    config = PPOConfig(max_new_tokens=6, ppo_epochs=2, num_minibatches=2, learning_rate=1e-2,
                       kl_coef=0.0, missing_eos_penalty=0.0)

    def reward_fn(prompt_ids, response_ids, features):
        return torch.tensor([r.count(TARGET_TOKEN) / max(len(r), 1) for r in response_ids])

    readings = {}
    for coef in (0.0, 5.0):
        run = replace(config, kl_loss_coef=coef)
        policy = make_policy(run)
        value_head = ValueHead.for_model(policy)
        optimizer = make_optimizer(policy, value_head, run)
        torch.manual_seed(0)
        readings[coef] = [ppo_update(policy, value_head, optimizer, tokenizer,
                                     random_prompts(8, 5, seed=0), reward_fn, run)
                          for _ in range(4)]
    assert readings[0.0][0].kl_exact == readings[5.0][0].kl_exact == 0.0
    free, held = readings[0.0][-1].kl_exact, readings[5.0][-1].kl_exact
    assert held < free / 2, (held, free)


def test_rows_weighted_0_pay_no_exact_kl_loss(tokenizer):
    """kl_loss_weights of 0 on every row: the update is the one without the term, weight
    for weight; of 1 on every row, the one with it."""
    config = PPOConfig(max_new_tokens=6, ppo_epochs=2, num_minibatches=2, learning_rate=1e-2,
                       kl_coef=0.0, missing_eos_penalty=0.0)
    prompts = random_prompts(8, 5, seed=0)

    def reward_fn(prompt_ids, response_ids, features):
        return torch.tensor([r.count(TARGET_TOKEN) / max(len(r), 1) for r in response_ids])

    def trained(coef: float, weights: list[float] | None) -> dict[str, torch.Tensor]:
        run = replace(config, kl_loss_coef=coef)
        policy = make_policy(run)
        value_head = ValueHead.for_model(policy)
        optimizer = make_optimizer(policy, value_head, run)
        torch.manual_seed(0)
        for _ in range(2):  # the second starts away from the reference, where the term bites
            member = PPOMember(prompts, reward_fn, value_head, optimizer,
                               kl_loss_weights=weights)
            ppo_update_batch(policy, tokenizer, [member], run)
        return lora_state(policy, "default")

    without, zero = trained(0.0, None), trained(5.0, [0.0] * 8)
    held, ones = trained(5.0, None), trained(5.0, [1.0] * 8)
    assert all(torch.equal(without[k], zero[k]) for k in without)
    assert all(torch.equal(held[k], ones[k]) for k in held)
    assert any(not torch.equal(without[k], held[k]) for k in held)
    with pytest.raises(ValueError, match="3 kl_loss_weights for 8 prompts"):
        ppo_update_batch(make_policy(config), tokenizer, [PPOMember(
            prompts, reward_fn, None, None, kl_loss_weights=[1.0] * 3)], config)


def test_ppo_raises_the_frequency_of_the_rewarded_token(tokenizer):
    """10 updates (batch 16, 8-token responses, seed 0) take the rewarded token from ~3.6 % of
    sampled tokens to ~22 %; asserted: at least +10 points and at least 3x the start."""
    config = PPOConfig(max_new_tokens=8, learning_rate=1e-2, kl_coef=0.0, missing_eos_penalty=0.0)
    policy = make_policy(config)
    value_head = ValueHead.for_model(policy)
    optimizer = make_optimizer(policy, value_head, config)
    prompts = random_prompts(16, 6, seed=1)

    def reward_fn(prompt_ids, response_ids, features):
        return torch.tensor([r.count(TARGET_TOKEN) / max(len(r), 1) for r in response_ids])

    before = target_token_frequency(policy, prompts)
    torch.manual_seed(0)
    for _ in range(10):
        ppo_update(policy, value_head, optimizer, tokenizer, prompts, reward_fn, config)
    after = target_token_frequency(policy, prompts)
    assert 0.01 < before < 0.06
    assert after >= before + 0.10 and after >= 3 * before, (before, after)


def test_ppo_update_steps_the_adaptive_kl_controller(tokenizer):
    """The first update has KL = 0 (LoRA B starts at 0): error −1 clips to −0.2, so β shrinks
    by 0.2·B/horizon, and the β used for the rewards is the one before the step."""
    config = PPOConfig(max_new_tokens=2, ppo_epochs=1, num_minibatches=1, kl_coef=0.05,
                       kl_target=1.0, kl_horizon=10)
    policy = make_policy(config)
    value_head = ValueHead.for_model(policy)
    controller = make_kl_controller(config)
    torch.manual_seed(0)
    stats = ppo_update(
        policy, value_head, make_optimizer(policy, value_head, config), tokenizer,
        random_prompts(4, 3, seed=2), lambda p, r, f: torch.rand(len(p)), config, controller,
    )
    assert stats.kl == 0.0 and stats.kl_coef == 0.05
    assert stats.next_kl_coef == pytest.approx(0.05 * (1 - 0.2 * 4 / 10))
    assert controller.value == stats.next_kl_coef


def test_an_anchor_is_the_kl_reference_and_the_features_stay_the_base_models(tokenizer):
    """Anchored at the policy's own weights, the first iteration's KL is zero although the
    policy is far from the base model; the reward model still sees base-model features;
    the policy's weights come back from the anchor's pass in place."""
    config = PPOConfig(max_new_tokens=6, ppo_epochs=1, num_minibatches=1, learning_rate=1e-3)
    policy = make_policy(config)
    with torch.no_grad():  # a start far from the base model
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    start = lora_state(policy, "default")
    anchor = load_anchor(policy, start)
    prompts = random_prompts(6, 4, seed=2)
    seen = {}

    def reward_fn(prompt_ids, response_ids, features):
        seen["features"] = features.clone()
        return torch.zeros(len(prompt_ids))

    kls = {}
    for name, reference in (("base", None), ("start", anchor)):
        load_lora(policy, "default", start)
        value_head = ValueHead.for_model(policy)
        torch.manual_seed(0)
        optimizer = make_optimizer(policy, value_head, config, adapter="default")
        kls[name] = ppo_update(policy, value_head, optimizer, tokenizer, prompts, reward_fn,
                               config, anchor=reference).kl
        seen[name] = seen.pop("features")
    assert kls["start"] == pytest.approx(0.0, abs=1e-4)
    assert kls["base"] > 0.5  # the same rollouts, measured from the base model
    assert torch.equal(seen["base"], seen["start"])  # base-model features either way
    moved = lora_state(policy, "default")
    assert any(not torch.equal(moved[k], start[k]) for k in moved)  # trained, not reset
    assert lora_state(policy, anchor).keys() == start.keys()
    assert all(torch.equal(lora_state(policy, anchor)[k], start[k]) for k in start)  # frozen
    assert not any(p.requires_grad for n, p in policy.named_parameters() if ".anchor." in n)


def test_an_anchor_from_another_lora_config_is_refused(tokenizer):
    policy = make_policy(PPOConfig())
    with pytest.raises(ValueError, match="weights the policy lacks"):
        load_anchor(policy, {"base_model.model.nowhere.lora_A.weight": torch.ones(1)})
