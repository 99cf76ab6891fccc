"""Several users in one PPO batch: each gets exactly the update of training alone."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from peft import PeftModel, get_peft_model

from learners.anchor import lora_state
from learners.ppo import PPOMember, make_optimizer, ppo_step
from learners.ppo_config import PPOConfig
from learners.ppo_math import make_kl_controller
from learners.rollout import Rollout, sample_responses
from learners.value_head import ValueHead
from tests.builders import EOS_ID, PAD_ID, tiny_llama

torch.set_num_threads(1)
SLOTS = ["default", "slot1", "slot2"]
ROWS = 6  # per user
CONFIG = PPOConfig(max_new_tokens=6, ppo_epochs=2, num_minibatches=2, learning_rate=1e-2,
                   kl_coef=0.1)


def users_policy() -> PeftModel:
    """A tiny Llama with three users' LoRAs, each already moved somewhere of its own."""
    base = tiny_llama(0)
    base.requires_grad_(False)
    policy = get_peft_model(base, CONFIG.lora_config())
    for slot in SLOTS[1:]:
        policy.add_adapter(slot, CONFIG.lora_config())
    policy.base_model.set_requires_grad(SLOTS, True)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_" in name:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return policy.eval()


def token_reward(token: int):
    """A user who likes ``token``: the share of it in the response."""
    def reward(prompt_ids, response_ids, features):
        return torch.tensor([sum(t == token for t in r) / max(len(r), 1) for r in response_ids])
    return reward


def failing_reward(prompt_ids, response_ids, features):
    raise RuntimeError("this user's reward model is broken")


def members_of(policy: PeftModel, rewards) -> list[PPOMember]:
    members = []
    for index, (slot, reward) in enumerate(zip(SLOTS, rewards, strict=True)):
        value_head = ValueHead.for_model(policy)
        with torch.no_grad():  # a critic that already says something
            value_head.linear.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(index))
        members.append(PPOMember(
            prompts=[[3 + index, 4 + row, 5] for row in range(ROWS)], reward_fn=reward,
            value_head=value_head,
            optimizer=make_optimizer(policy, value_head, CONFIG, 1e-2, adapter=slot),
            kl_controller=make_kl_controller(CONFIG), adapter=slot,
            row_groups=[0, 0, 0, 0, 1, 1] if index == 2 else None,
            generator=torch.Generator().manual_seed(100 + index)))
    return members


def rows_of(rollout: Rollout, rows: slice) -> Rollout:
    return Rollout(rollout.input_ids[rows], rollout.attention_mask[rows],
                   rollout.response_mask[rows], rollout.ended_with_eos[rows],
                   rollout.context_length, rollout.eos_token_id)


def joint_rollout(policy: PeftModel, members: list[PPOMember]) -> Rollout:
    torch.manual_seed(0)
    return sample_responses(policy, [p for m in members for p in m.prompts], eos_token_id=EOS_ID,
                            pad_token_id=PAD_ID, max_new_tokens=CONFIG.max_new_tokens,
                            adapter_names=[m.adapter for m in members for _ in m.prompts])


def trained_state(policy: PeftModel, member: PPOMember) -> dict[str, torch.Tensor]:
    state = lora_state(policy, member.adapter)
    state.update({f"value.{k}": v.detach().clone() for k, v in member.value_head.state_dict().items()})
    return state


@pytest.mark.parametrize(("broken", "target_kl", "kl_loss_coef"),
                         [(None, None, 0.0), (1, None, 0.0), (None, 0.2, 0.0), (None, None, 1.0)])
def test_users_batched_get_the_update_each_would_get_alone(broken, target_kl, kl_loss_coef):
    """One PPO step of three users in one batch against three separate steps on the same
    rollouts: every LoRA weight, value head, β and statistic agrees to float tolerance.
    With one user's reward failing, that user is dropped untouched and the others still
    get exactly their own updates. With a target KL, each user's steps stop where their
    own policy passed it (here after 1, 3 and 2 of 4), as alone. With the exact-KL loss
    term, each user's is to the reference at their own rows."""
    config = dataclasses.replace(CONFIG, target_kl=target_kl, kl_loss_coef=kl_loss_coef)
    rewards = [token_reward(7), token_reward(11), token_reward(13)]
    if broken is not None:
        rewards[broken] = failing_reward
    policy = users_policy()
    members = members_of(policy, rewards)
    rollout = joint_rollout(policy, members)
    untouched = {m.adapter: trained_state(policy, m) for m in members}
    alone_policy, alone_members = copy.deepcopy((policy, members))

    batched = ppo_step(policy, rollout, members, config)

    alone = []
    for index, member in enumerate(alone_members):
        rows = slice(index * ROWS, (index + 1) * ROWS)
        (outcome,) = ppo_step(alone_policy, rows_of(rollout, rows), [member], config)
        alone.append(outcome)
    for index, (together, separate) in enumerate(zip(members, alone_members, strict=True)):
        if index == broken:
            assert isinstance(batched[index], RuntimeError) and isinstance(alone[index], RuntimeError)
            state = trained_state(policy, together)
            assert all(torch.equal(state[k], untouched[together.adapter][k]) for k in state)
            continue
        mine, theirs = trained_state(policy, together), trained_state(alone_policy, separate)
        lora = [k for k in mine if "lora_B" in k]
        assert lora and all(not torch.equal(mine[k], untouched[together.adapter][k]) for k in lora)
        for name in mine:
            torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=1e-6)
        for field in ("score", "kl", "kl_exact", "kl_max", "policy_loss", "value_loss",
                      "approx_kl", "next_kl_coef"):
            assert getattr(batched[index], field) == pytest.approx(
                getattr(alone[index], field), rel=1e-4, abs=1e-6), field
        assert batched[index].response_tokens == alone[index].response_tokens
        assert batched[index].steps == alone[index].steps
    steps = [outcome.steps for outcome in batched if not isinstance(outcome, Exception)]
    full = CONFIG.ppo_epochs * CONFIG.num_minibatches
    if target_kl is None:
        assert steps == [full] * len(steps)
    else:  # the stop acted, at different steps for different users
        assert min(steps) < full and len(set(steps)) > 1, steps


def test_each_user_moves_only_their_own_adapter():
    """A step of users 0 and 2 leaves user 1's slot, trained by nobody here, as it was."""
    policy = users_policy()
    members = members_of(policy, [token_reward(7), token_reward(11), token_reward(13)])
    idle = trained_state(policy, members[1])
    rollout = joint_rollout(policy, members[::2])
    ppo_step(policy, rollout, members[::2], CONFIG)
    after = trained_state(policy, members[1])
    assert all(torch.equal(after[k], idle[k]) for k in idle)
