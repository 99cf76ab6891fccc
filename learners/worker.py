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
from dataclasses import dataclass, field, replace

import redis
import torch

from learners.feedback_consumer import FeedbackConsumer
from learners.gate import GateConfig
from learners.ppo_config import PPOConfig
from learners.reward import RewardConfig
from learners.scheduler import LeaseLost, Scheduler
from learners.user_update import UpdateOutcome, UserUpdater
from service.modeling import load_base_model
from service.settings import Settings
from service.store import PREFIX

log = logging.getLogger(__name__)


def worker_status_key(worker_id: str) -> str:
    return f"{PREFIX}:learner:worker:{worker_id}"


@dataclass
class LearnerOptions:
    """What Settings does not expose: algorithm details with tested defaults."""

    ppo: PPOConfig = field(default_factory=PPOConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    # A small, quick reward model: the learner refits it often on little data.
    reward: RewardConfig = field(default_factory=lambda: RewardConfig(
        rank=4, population_hidden=64, user_hidden=64, steps=150))
    seed: int = 0


def ppo_config_for(settings: Settings, base: PPOConfig | None = None) -> PPOConfig:
    """The PPO config with the adapter shape the servers expect (one source: Settings)."""
    return replace(base or PPOConfig(), lora_rank=settings.lora_rank, lora_alpha=settings.lora_alpha,
                   lora_target_modules=tuple(settings.lora_target_modules),
                   max_new_tokens=settings.learner_max_new_tokens)


class LearnerLoop:
    def __init__(self, settings: Settings, worker_id: str, options: LearnerOptions | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.options = options or LearnerOptions()
        self.client = redis.Redis.from_url(settings.effective_redis_url)
        self.consumer = FeedbackConsumer(self.client, worker_id, int(settings.learner_reclaim_idle_s * 1000))
        self.scheduler = Scheduler(self.client, settings.learner_min_feedback, settings.learner_lease_s)
        base = load_base_model(settings.base_model_path, settings.device)
        self.updater = UserUpdater(
            settings, self.client, base, ppo_config_for(settings, self.options.ppo),
            self.options.gate, self.options.reward, settings.learner_ppo_iterations,
            settings.learner_rollout_batch, self.options.seed,
        )
        self.updates: list[UpdateOutcome] = []

    def step(self, block_ms: int = 200) -> UpdateOutcome | None:
        """Apply waiting feedback, then update one user if any has enough new feedback."""
        self.consumer.poll(block_ms=block_ms)
        with self.scheduler.next_user() as leased:
            if leased is None:
                return None
            user_id, token = leased
            self._status("updating", user_id)
            try:
                outcome = self.updater.update(user_id, self.scheduler, token)
            except LeaseLost:
                log.warning("lease on %s expired mid-update: result dropped", user_id)
                return None
            finally:
                self._status("idle", "")
        self.updates.append(outcome)
        log.info("user %s: %s (%.1fs)", user_id, outcome.decision.reason, outcome.seconds)
        return outcome

    def run(self, stop: threading.Event) -> None:
        self._status("idle", "")
        while not stop.is_set():
            try:
                self.step()
            except redis.ConnectionError:
                log.warning("Redis unreachable; retrying")
                time.sleep(1.0)

    def _status(self, state: str, user_id: str) -> None:
        self.client.hset(worker_status_key(self.worker_id), mapping={
            "state": state, "user_id": user_id, "pid": os.getpid(), "at": f"{time.time():.3f}"})


class LearnerWorker:
    """Ray actor body (see ``pool.py``): the loop on a thread of its own."""

    def __init__(self, settings_args: dict, worker_id: str) -> None:
        settings = Settings(**settings_args)
        torch.set_num_threads(settings.torch_threads)
        self.loop = LearnerLoop(settings, worker_id)
        self._stop = threading.Event()
        # Started here, not by a call: an actor Ray restarts after a crash resumes by itself.
        self._thread = threading.Thread(target=self.loop.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=600)
        return len(self.loop.updates)

    def status(self) -> dict:
        return {"worker_id": self.loop.worker_id, "updates": len(self.loop.updates),
                "alive": self._thread.is_alive()}
