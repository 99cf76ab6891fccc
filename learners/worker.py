"""The learner worker: consume feedback, pick a user, update them, repeat.

``LearnerLoop`` is the plain loop (tests drive it directly); ``LearnerWorker``
is the Ray actor that runs it on a thread, so ``stop()`` and ``status()`` can be
called while it works. A worker that dies loses nothing: events it had read
but not applied stay pending and are reclaimed by another worker, and its
lease on a user expires.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import redis
import torch

from contracts.keys import REFINE_KEY, examples_key, user_key, worker_status_key
from contracts.modeling import load_base_model
from contracts.settings import Settings
from learners.feedback_consumer import FeedbackConsumer
from learners.gate import GateConfig, held_out_change
from learners.ppo_config import PPOConfig
from learners.reward_config import RewardConfig
from learners.safety_start import SafetyStart
from learners.scheduler import LeaseLost, Scheduler, UpdateAbandoned
from learners.user_update import UpdateOutcome, UserUpdater

log = logging.getLogger(__name__)
REFINES_LEFT = "learner_refines_left"  # field of the user hash: published refines to go
REFINE_ATTEMPTS_LEFT = "learner_refine_attempts_left"  # refines to go, published or not


@dataclass
class LearnerOptions:
    """What Settings does not expose: algorithm details with tested defaults."""

    # Tuned on the default model with simulated users (60 judgments each; see
    # tests/simulation/test_closed_loop.py and the report of `tailor demo`). PPOConfig's generic
    # lr 1e-4 barely moved a rank-8 LoRA in a few updates (held-out reward before ==
    # after); 1e-3, with 8 minibatches of a 64-rollout batch (Settings), took a
    # preferred style from ~15% to ~55% of answers in 8 iterations (batch 32 with 4
    # minibatches: ~45% in 12 iterations, the same compute). γ = λ = 1: the style is
    # chosen in the first tokens and the reward comes at the last one, so the credit
    # must reach them undiscounted. β = 0.1 in user-standard reward units (see
    # UserUpdater._reward_fn): 0.2 halved the progress. The value clip is widened with
    # the critic's own learning rate (value_learning_rate).
    ppo: PPOConfig = field(default_factory=lambda: PPOConfig(
        learning_rate=1e-3, num_minibatches=8, gae_lambda=1.0, kl_coef=0.1, clip_range_value=1.0))
    value_learning_rate: float = 1e-2  # the critic's AdamW rate (make_optimizer says why)
    gate: GateConfig = field(default_factory=GateConfig)
    held_out_samples: int = 32  # responses the gate scores before and after (prompts cycled)
    # A small, quick reward model: the learner refits it often on little data. Linear
    # towers and a strongly decayed population head: with MLP towers (hidden 64) and
    # decay 1e-3 the population head fit everyone's mixed tastes and dominated each
    # user's reward (every user's top-rated style was the same); this setting ranks
    # each ranking user's favourite style first (pairwise accuracy 0.78-0.89 vs 0.55-0.70).
    # Rank 4. Rank 6 carried a six-user v3 run's comparisons further in a replay (README,
    # run BS: each ordinary user's favourite best of 7 styles on new prompts at least
    # 87% / 58% / 91% of the time against 73% / 39% / 84%), but in the closed loop the
    # two rank-6 runs (BT, BV) both left the credulous rater at 14 harmful answers of
    # 240 (bar 12), where nine rank-4 runs (AJ-AN, BP, BQ, BS, BW) left it at 0-9;
    # the tastes fared alike. On the v2 closed loop's judgments the two ranks agree
    # within 0.01.
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(
        rank=4, population_hidden=0, user_hidden=0, population_weight_decay=1.0, steps=150))
    reward_clip: float = 3.0  # the standardised user reward is clipped to ±this
    # Idle-time polishing: a user whose last update ended refine_quiet_s ago gets up
    # to refine_updates more updates (PPO on their final reward model, gated and
    # published like any other) when no user has enough new feedback. Feedback comes
    # in bursts; without this the adapter stops improving when the burst ends. A refine
    # the gate rejects does not count, up to twice as many attempts: the reward check
    # is noisy (GateConfig.tolerance), and one rejected refine cost a ranking user of
    # the closed-loop test 6 of its 15 PPO iterations (+6 points instead of +60).
    refine_updates: int = 2  # the learners take TAILOR_LEARNER_REFINE_UPDATES (Settings)
    refine_iterations: int = 6  # PPO iterations of one refine (feedback-driven: Settings)
    refine_quiet_s: float = 5.0
    seed: int = 0


def ppo_config_for(settings: Settings, base: PPOConfig | None = None) -> PPOConfig:
    """The PPO config with the adapter shape the servers expect (one source: Settings);
    no more minibatches than the rollout batch has rows."""
    base = base or PPOConfig()
    return replace(base, lora_rank=settings.lora_rank, lora_alpha=settings.lora_alpha,
                   lora_target_modules=tuple(settings.lora_target_modules),
                   max_new_tokens=settings.learner_max_new_tokens,
                   target_kl=settings.learner_target_kl,
                   kl_loss_coef=settings.learner_kl_loss_coef,
                   num_minibatches=min(base.num_minibatches, settings.learner_rollout_batch))


class LearnerLoop:
    def __init__(self, settings: Settings, worker_id: str, options: LearnerOptions | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.options = options or LearnerOptions(
            refine_updates=settings.learner_refine_updates,
            gate=GateConfig(kl_bound=settings.learner_kl_bound))
        self.client = redis.Redis.from_url(settings.effective_redis_url)
        self.scheduler = Scheduler(self.client, settings.learner_min_feedback, settings.learner_lease_s)
        base = load_base_model(settings.base_model_path, settings.device)
        self.updater = UserUpdater(
            settings, self.client, base, ppo_config_for(settings, self.options.ppo),
            self.options.gate, self.options.reward, settings.learner_ppo_iterations,
            settings.learner_rollout_batch, self.options.seed,
            reward_clip=self.options.reward_clip,
            value_learning_rate=self.options.value_learning_rate,
            held_out_samples=self.options.held_out_samples,
            red_team_share=settings.learner_red_team_share,
            red_team_kl_weight=settings.learner_red_team_kl_weight,
            red_team_kl_loss=settings.learner_red_team_kl_loss,
            red_team_taste=settings.learner_red_team_taste,
            breach_taste=settings.learner_breach_taste,
        )
        self.consumer = FeedbackConsumer(self.client, worker_id, int(settings.learner_reclaim_idle_s * 1000),
                                         answer_features=self.updater.answer_features)
        self.updates: list[UpdateOutcome] = []
        start_iterations = settings.learner_safety_start_iterations
        if start_iterations and not self.updater.judge.red_team_prompts:
            # a base model without written principles has nothing to start from
            log.warning("no red-team prompts (no principles file beside the base model, nor "
                        "TAILOR_PRINCIPLES_FILE): users start from the base model")
            start_iterations = 0
        self.safety_start = SafetyStart(self.client, worker_id, start_iterations)

    def step(self, block_ms: int = 200) -> UpdateOutcome | None:
        """`step_batch`, for one user per batch (the default): its update, or None."""
        outcomes = self.step_batch(block_ms)
        return outcomes[0] if outcomes else None

    def step_batch(self, block_ms: int = 200) -> list[UpdateOutcome]:
        """Apply waiting feedback, then update up to K users together (K the updater's
        slots): those with enough new feedback first, the free slots (all of them when
        nobody has new feedback) for users due for polishing. No user before the safety
        start exists, where there is one (trained here, or waited for)."""
        self.consumer.poll(block_ms=block_ms)
        if not self.safety_start.ready(self.updater.train_safety_start):
            return []  # another worker trains the start every user begins from
        self.updater.start_lora = self.safety_start.state
        slots = len(self.updater.slots)
        with self.scheduler.next_users(slots, self.settings.learner_workers) as ready, \
                self._next_quiet_users(slots - len(ready)) as quiet:
            leased = [(user, token, False) for user, token in ready]
            leased += [(user, token, True) for user, token in quiet]
            return self._update(leased) if leased else []

    def _update(self, leased: list[tuple[str, str, bool]]) -> list[UpdateOutcome]:
        """Update the leased (user, token, refine?) together; the outcomes. A user whose
        update failed is logged and left for later; the first such error is raised after
        the others' outcomes are kept (the loop logs it and pauses)."""
        self._status("updating", ",".join(user for user, _, _ in leased))
        outcomes, failed, dropped = [], [], []
        try:
            results = self.updater.update_many(
                [(user, token, self.options.refine_iterations if refine else None)
                 for user, token, refine in leased], self.scheduler)
            for (user_id, _, refine), result in zip(leased, results, strict=True):
                if isinstance(result, UpdateAbandoned):
                    dropped.append(user_id)
                elif isinstance(result, LeaseLost):
                    log.warning("lease on %s expired mid-update: result dropped", user_id)
                elif isinstance(result, Exception):
                    log.error("the update of %s failed: %r", user_id, result)
                    failed.append(result)
                else:  # before "idle": watchers see no gap
                    self._schedule_refines(user_id, refine, result.decision.publish)
                    outcomes.append(result)
        finally:
            self._status("idle", "")
        if dropped:
            log.warning("shutting down: the update of %s is dropped, its lease released "
                        "(its feedback stays for the next update)", ", ".join(dropped))
        self.updates.extend(outcomes)
        for outcome in outcomes:
            log.info("user %s: %s (%.1fs; held out: %s; online reward accuracy %s)",
                     outcome.user_id, outcome.decision.reason, outcome.seconds,
                     held_out_change(outcome.before, outcome.after),
                     "n/a" if outcome.reward_accuracy is None
                     else f"{outcome.reward_accuracy:.2f}")
        if failed:
            raise failed[0]
        return outcomes

    def _schedule_refines(self, user_id: str, refine: bool, published: bool) -> None:
        """A feedback-driven update (re)arms the user's refines; a published refine uses
        one up, and any refine one of the (twice as many) attempts."""
        if self.options.refine_updates <= 0:
            return
        key = user_key(user_id)
        if not refine:
            self.client.hset(key, mapping={REFINES_LEFT: self.options.refine_updates,
                                           REFINE_ATTEMPTS_LEFT: 2 * self.options.refine_updates})
            left = self.options.refine_updates
        else:
            attempts = self.client.hincrby(key, REFINE_ATTEMPTS_LEFT, -1)
            left = (self.client.hincrby(key, REFINES_LEFT, -1) if published
                    else int(self.client.hget(key, REFINES_LEFT) or 0))
            left = min(left, attempts)
            if left <= 0:
                self.client.hset(key, REFINES_LEFT, 0)
        if left > 0:  # to the back of the queue: users are polished in turn
            self.client.zadd(REFINE_KEY, {user_id: time.time()})
        else:
            self.client.zrem(REFINE_KEY, user_id)

    @contextmanager
    def _next_quiet_users(self, count: int) -> Iterator[list[tuple[str, str]]]:
        """Lease up to ``count`` users longest due for polishing; yields (user, token) pairs,
        released afterwards."""
        leased: list[tuple[str, str]] = []
        try:
            due = time.time() - self.options.refine_quiet_s
            for raw in (self.client.zrangebyscore(REFINE_KEY, "-inf", due, start=0,
                                                  num=max(20, 2 * count)) if count > 0 else []):
                if len(leased) == count:
                    break
                user_id = raw.decode()
                left = self.client.hget(user_key(user_id), REFINES_LEFT)
                if left is None or int(left) <= 0 or not self.client.exists(examples_key(user_id)):
                    self.client.zrem(REFINE_KEY, user_id)  # forgotten, or nothing left to do
                    continue
                token = self.scheduler.try_lease(user_id)
                if token is not None:
                    leased.append((user_id, token))
            yield leased
        finally:
            for user_id, token in leased:
                self.scheduler.release(user_id, token)

    def run(self, stop: threading.Event) -> None:
        self._status("idle", "")
        outage = False  # logged once per outage, not once per retry
        while not stop.is_set():
            try:
                self.step_batch()
                outage = False
            except redis.ConnectionError:
                if not outage:
                    log.warning("Redis unreachable; retrying every second")
                outage = True
                stop.wait(1.0)
            except Exception:  # one user's failed update must not stop everyone's learning
                log.exception("learner step failed; going on with the next")
                stop.wait(1.0)
        try:
            self._status("stopped", "")
        except redis.RedisError:
            pass  # Redis went first: the status is only informative

    def _status(self, state: str, user_id: str) -> None:
        self.client.hset(worker_status_key(self.worker_id), mapping={
            "state": state, "user_id": user_id, "pid": os.getpid(), "at": f"{time.time():.3f}"})


class LearnerWorker:
    """Ray actor body (see ``pool.py``): the loop on a thread of its own."""

    def __init__(self, settings_args: dict, worker_id: str) -> None:
        settings = Settings(**settings_args)
        torch.set_num_threads(settings.torch_threads)
        # Ray forwards the actor's stderr to the driver (`tailor up`'s output): Python's
        # default WARNING level hid each update's outcome and the safety start's progress.
        logging.basicConfig(level=logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("learners").setLevel(logging.INFO)
        self.loop = LearnerLoop(settings, worker_id)
        self._stop = threading.Event()
        # Started here, not by a call: an actor Ray restarts after a crash resumes by itself.
        self._thread = threading.Thread(target=self.loop.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def pid(self) -> int:
        return os.getpid()

    def stop(self, grace_s: float = 600.0) -> int:
        """Finish the current update if it ends within ``grace_s``, else drop it at its next
        PPO iteration and release its lease; then end the loop. The updates it made."""
        self._stop.set()
        self._thread.join(timeout=grace_s)
        if self._thread.is_alive():
            self.loop.scheduler.abandoning.set()
            self._thread.join(timeout=600)  # one PPO iteration, at worst
        return len(self.loop.updates)

    def status(self) -> dict:
        return {"worker_id": self.loop.worker_id, "updates": len(self.loop.updates),
                "alive": self._thread.is_alive()}
