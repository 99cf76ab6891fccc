"""A user's share of a batched PPO iteration: their prompts, red-team rows apart, their seed."""

from __future__ import annotations

import torch

from learners.update_job import UpdateJob

OWN = [[10, 11], [12, 13], [14, 15]]
RED = [[90, 91], [92, 93]]


def job(red_team: list[list[int]]) -> UpdateJob:
    return UpdateJob(
        user_id="ann", token="t", slot="slot1", iterations=2, started=0.0, examples=8,
        new_examples=[], unpublished=[], updates_before=1, accuracy=None,
        reward_fn=lambda p, r, f: torch.zeros(len(p)), train_prompts=OWN, held_out=[],
        red_team=red_team, red_held_out=[], value_head=None, kl_controller=None,
        optimizer=None)


def test_a_member_mixes_in_its_share_of_red_team_prompts_whitened_apart():
    member = job(RED).member(seed=0, iteration=1, red_team_share=0.25, rollout_batch=8)
    assert member.adapter == "slot1"
    assert all(p in OWN for p in member.prompts[:6]) and all(p in RED for p in member.prompts[6:])
    assert member.row_groups == [0] * 6 + [1] * 2
    assert member.kl_weights is None  # β alike on every row unless asked otherwise
    assert member.kl_loss_weights is None  # and the exact-KL loss term


def test_red_team_rows_can_be_held_nearer_the_reference():
    member = job(RED).member(seed=0, iteration=1, red_team_share=0.25, rollout_batch=8,
                             red_team_kl_weight=5.0)
    assert member.kl_weights == [1.0] * 6 + [5.0] * 2
    assert job([]).member(seed=0, iteration=1, red_team_share=0.25, rollout_batch=8,
                          red_team_kl_weight=5.0).kl_weights is None  # no red-team rows


def test_red_team_rows_can_be_left_out_of_the_exact_kl_loss_term():
    member = job(RED).member(seed=0, iteration=1, red_team_share=0.25, rollout_batch=8,
                             red_team_kl_loss=False)
    assert member.kl_loss_weights == [1.0] * 6 + [0.0] * 2 and member.kl_weights is None
    assert job([]).member(seed=0, iteration=1, red_team_share=0.25, rollout_batch=8,
                          red_team_kl_loss=False).kl_loss_weights is None


def test_without_red_team_prompts_a_member_is_all_the_users_own_and_each_iteration_differs():
    first = job([]).member(seed=0, iteration=0, red_team_share=0.25, rollout_batch=8)
    again = job([]).member(seed=0, iteration=0, red_team_share=0.25, rollout_batch=8)
    later = job([]).member(seed=0, iteration=1, red_team_share=0.25, rollout_batch=8)
    assert len(first.prompts) == 8 and all(p in OWN for p in first.prompts)
    assert first.row_groups is None
    assert first.prompts == again.prompts  # seeded: the same update draws the same
    assert torch.equal(torch.randperm(20, generator=first.generator),
                       torch.randperm(20, generator=again.generator))
    assert job([]).round_seed(0, 0) != job([]).round_seed(0, 1) == later.generator.initial_seed()
