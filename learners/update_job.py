"""One user's update in progress: what a learner worker holds for them between preparing
the update and gating it, and their share (a `PPOMember`) of each batched PPO iteration."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import torch

from learners.anchor import LoraState
from learners.gate import HeldOutEval
from learners.ppo import PPOMember, PPOStats, RewardFn
from learners.ppo_math import KLController
from learners.training_data import TrainingExample
from learners.value_head import ValueHead


@dataclass
class UpdateJob:
    user_id: str
    token: str  # the user's lease
    slot: str  # the peft adapter their LoRA trains in
    iterations: int  # PPO iterations of this update
    started: float  # time.time() when it began
    examples: int  # all the user's examples
    new_examples: list[TrainingExample]  # those not trained on before
    unpublished: list[TrainingExample]  # those not in any published version yet
    updates_before: int
    accuracy: float | None  # the reward model's online accuracy on the new feedback
    reward_fn: RewardFn
    train_prompts: list[list[int]]
    held_out: list[list[int]]  # the gate's prompts
    red_team: list[list[int]]  # red-team prompts for the batches (none: share 0)
    red_held_out: list[list[int]]  # red-team prompts of the gate's cost check
    value_head: ValueHead
    kl_controller: KLController
    optimizer: torch.optim.Optimizer
    before: HeldOutEval | None = None  # the gate's evaluation of the version in place
    stats: list[PPOStats] = field(default_factory=list)
    # The LoRA before the last two iterations' steps, oldest first: an iteration's rollouts
    # measure the KL of the state it started from only after its step moved on from it,
    # so the one to go back to when they measure too much is the state before that.
    states_sampled: deque[LoraState] = field(default_factory=lambda: deque(maxlen=2))
    # The rollouts' KL of each state the adapter kept: a state gone back from leaves out
    # its reading (learners.gate.next_step_crosses_kl_bound fits a line through them)
    kl_path: list[float] = field(default_factory=list)
    rollbacks: int = 0  # times the adapter went back to a state sampled before
    error: Exception | None = None  # what stopped this user's update (the others go on)

    def round_seed(self, seed: int, iteration: int) -> int:
        """Distinct per iteration and per update (a refine sees the same examples again)."""
        return seed + 1000 * iteration + self.examples + 100_003 * self.updates_before

    def member(self, seed: int, iteration: int, red_team_share: float,
               rollout_batch: int, red_team_kl_weight: float = 1.0,
               red_team_kl_loss: bool = True) -> PPOMember:
        """This user's rows of PPO iteration ``iteration``: prompts drawn from their own (and
        red-team ones), their critic, optimiser, β and a minibatch order of their own."""
        round_seed = self.round_seed(seed, iteration)
        draw = random.Random(round_seed)
        red = round(red_team_share * rollout_batch) if self.red_team else 0
        prompts = (draw.choices(self.train_prompts, k=rollout_batch - red)
                   + draw.choices(self.red_team, k=red))
        # advantages whitened apart: the red-team rows' penalties spread their rewards
        # far wider than a user's taste, and would otherwise set the batch's scale
        groups = [0] * (len(prompts) - red) + [1] * red if red else None
        # β × red_team_kl_weight on red-team rows: what the user's taste may change is how
        # their assistant writes, and on requests for harm, provocations and myths the
        # reference (the safety start) already answers as everyone should. The heads,
        # linear on pooled features, miss drifted blends there (a calm answer with an
        # insult appended); a dearer KL keeps the policy from drifting into them.
        weights = ([1.0] * (len(prompts) - red) + [red_team_kl_weight] * red
                   if red and red_team_kl_weight != 1.0 else None)
        # without red_team_kl_loss the exact-KL loss term (PPOConfig.kl_loss_coef) holds only
        # the user's own prompts: on requests for harm the heads' penalty alone moves them
        loss_weights = ([1.0] * (len(prompts) - red) + [0.0] * red
                        if red and not red_team_kl_loss else None)
        return PPOMember(prompts, self.reward_fn, self.value_head, self.optimizer,
                         self.kl_controller, adapter=self.slot, row_groups=groups,
                         generator=torch.Generator().manual_seed(round_seed),
                         kl_weights=weights, kl_loss_weights=loss_weights)
