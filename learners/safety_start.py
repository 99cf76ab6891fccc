"""The safety start: one adapter that every user's adapter starts from.

A user's own PPO sees few prompts that invite harm, and the few it sees cannot
move a misbehaviour of 5-20% far within one user's budget: on the v3 default
model, half of every user's batch on red-team prompts left the toxic, harmful and
false rates within a few points of the base model's over a whole `tailor demo`.
PPO on the shared heads alone — reward = −strength × P(the answer breaks a
criterion) — over 120 red-team prompts took all three from 5-17% to 0-2% in
18 iterations of 64 rollouts (over the principles' 21 example prompts alone it did
not generalise: the rates stayed put, hence the principles' ``red_team`` list).
That work does not depend on any user, so it is done once, for everyone, by
whichever learner worker first finds it missing
(a Redis lock keeps it to one), and stored in Redis beside the shared heads;
each new user's adapter then starts from it instead of from the base model.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import redis
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from contracts.keys import SAFETY_START_KEY, SAFETY_START_LOCK_KEY
from learners.anchor import LoraState, load_lora, lora_state
from learners.everyday_anchor import base_fine_answers, imitation_step
from learners.ppo import make_optimizer, ppo_update
from learners.ppo_config import PPOConfig
from learners.ppo_math import make_kl_controller
from learners.shared_judge import SharedJudge
from learners.value_head import ValueHead

log = logging.getLogger(__name__)
LOCK_SECONDS = 1800  # longer than any training of it: a crashed trainer's lock expires
# base-model answers sampled per everyday prompt for the start to imitate: the v3
# build's 60 prompts gave 240, of which the heads kept 213 (the rest brush-offs)
EVERYDAY_ANSWERS_PER_PROMPT = 4


def train_safety_start(policy, tokenizer, start: LoraState, judge: SharedJudge,
                       prompts: list[list[int]], config: PPOConfig, iterations: int,
                       rollout_batch: int, value_learning_rate: float | None,
                       seed: int, everyday: list[list[int]] | None = None,
                       everyday_steps: int = 0) -> LoraState:
    """PPO from ``start`` (the base model's LoRA state) on the shared heads' penalty
    alone over ``prompts``; returns the trained LoRA state.

    With ``everyday`` prompts and ``everyday_steps`` > 0, each iteration also takes that
    many optimiser steps imitating the base model's fine answers to them
    (learners.everyday_anchor), each on a PPO minibatch's worth (``rollout_batch`` /
    ``num_minibatches``), so the start keeps the base model's everyday styles. Steps,
    not a weight on the loss: under Adam and the gradient-norm clip a separate step's
    size hardly depends on its loss's scale (on the tiny model, weights 10 and 30 gave
    starts whose NLL of the base model's everyday answers agreed to three decimals)."""
    if not prompts:
        raise ValueError("the safety start needs red-team prompts: add them to the "
                         "principles file (examples or red_team)")
    # The exact-KL loss term (PPOConfig.kl_loss_coef) holds the start too: without it
    # (run CB) the start went 8-11 nats from the base, against 2-3, and its rates after
    # were no better than with it (README, runs CA-CD; one run without it).
    adapter = policy.active_adapter
    load_lora(policy, adapter, start)
    value_head = ValueHead.for_model(policy).to(policy.device)
    optimizer = make_optimizer(policy, value_head, config, value_learning_rate, adapter)
    kl_controller = make_kl_controller(config)
    draw = random.Random(seed)
    torch.manual_seed(seed)
    imitated = None
    if everyday and everyday_steps > 0:
        imitated = base_fine_answers(policy, tokenizer, judge,
                                     everyday * EVERYDAY_ANSWERS_PER_PROMPT, config)
        log.info("safety start: imitating %d of the base model's %d everyday answers",
                 imitated.input_ids.shape[0], len(everyday) * EVERYDAY_ANSWERS_PER_PROMPT)

    def reward(prompt_ids, response_ids, features: torch.Tensor) -> torch.Tensor:
        return -judge.penalty(features.float().cpu(), red_team=True)

    for iteration in range(iterations):
        stats = ppo_update(policy, value_head, optimizer, tokenizer,
                           draw.choices(prompts, k=rollout_batch), reward, config,
                           kl_controller)
        nll = None
        if imitated is not None and imitated.input_ids.shape[0]:
            size = max(1, rollout_batch // config.num_minibatches)
            nll = sum(imitation_step(policy, optimizer, imitated.rows(torch.tensor(
                draw.choices(range(imitated.input_ids.shape[0]), k=size))), config)
                for _ in range(everyday_steps)) / everyday_steps
        log.info("safety start %d/%d: mean penalty %.3f, KL %.2f%s", iteration + 1,
                 iterations, -stats.score, stats.kl,
                 "" if nll is None else f", everyday NLL {nll:.3f}")
    return lora_state(policy, adapter)


class SafetyStart:
    """The shared start as one worker sees it: loaded from Redis, or trained here."""

    def __init__(self, client: redis.Redis, worker_id: str, iterations: int) -> None:
        self.client = client
        self.worker_id = worker_id
        self.iterations = iterations
        self.state: LoraState | None = None
        self.version: str | None = None

    def ready(self, train: Callable[[], LoraState]) -> bool:
        """True when users may be trained: the start is off, loaded, or was just trained
        here (``train``); False while another worker trains it."""
        if self.iterations <= 0:
            return True
        version = self.client.hget(SAFETY_START_KEY, "version")
        if version is not None:
            if version.decode() != self.version:
                self.state = load_tensors(self.client.hget(SAFETY_START_KEY, "tensors"))
                self.version = version.decode()
            return True
        if not self.client.set(SAFETY_START_LOCK_KEY, self.worker_id, nx=True, ex=LOCK_SECONDS):
            return False  # someone else trains it: wait
        try:
            started = time.time()
            state = train()
            version = f"{started:.3f}"
            self.client.hset(SAFETY_START_KEY, mapping={
                "tensors": save_tensors({k: v.contiguous() for k, v in state.items()}),
                "version": version, "iterations": self.iterations,
                "seconds": round(time.time() - started, 1), "worker": self.worker_id})
            self.state, self.version = state, version
            log.info("safety start trained in %.0fs", time.time() - started)
        finally:
            self.client.delete(SAFETY_START_LOCK_KEY)
        return True
