"""`tailor bench scale`, learning: feedback lag as simulated users grow, K = 1 against K.

N simulated users (N = 4, 16, 64 by default) are active at the same time, each
ranking one answer every ``period_s`` seconds (their phases spread, so the
judgments arrive at a steady N / period_s per second), through the Ingress's own
store (`service.feedback_store`: the completion kept, the event on the stream).
One learner worker (`learners.worker.LearnerLoop`, in this process) applies
them and trains the users, ``K`` per PPO batch, for ``duration_s`` seconds.
Then, per (K, N):

- feedback lag (judgment accepted -> an adapter trained on it published) p50 and
  p95 over every judgment of the window: a judgment not yet trained on counts
  with its age at the end, a lower bound of its lag (a worker that cannot keep up
  leaves a backlog that the lags of what it did publish would hide);
- users updated per minute by the worker, and the judgments still waiting.

The answers come from a pool the base model generated once (the serving engine,
three choices per prompt, with their features), so the simulated users cost the
learner nothing. Learner settings are smaller than the service's defaults so that
64 users fit a run on a CPU (`LEARNING_SETTINGS`): what is compared is K = 1
against K, in the same run with the same schedule.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis
import torch
from rich.console import Console
from rich.table import Table

from benchmarks.serve import PROMPTS
from contracts.feedback_lag import lag_quantile
from contracts.keys import FEEDBACK_LAG_KEY, examples_key, user_key
from contracts.records import CompletionRecord, FeedbackEvent
from contracts.settings import Settings
from learners.training_data import TrainingExample
from learners.worker import LearnerLoop, LearnerOptions
from service.engine import Engine, EngineRequest
from service.engine_interface import SamplingParams
from service.feedback_store import FeedbackStore

# One PPO iteration of 16 rollouts of at most 16 tokens per update, an update every
# 2 new judgments, 8 held-out answers for the gate, no refines.
LEARNING_SETTINGS = {"learner_rollout_batch": 16, "learner_ppo_iterations": 1,
                     "learner_max_new_tokens": 16, "learner_min_feedback": 2,
                     "learner_refine_updates": 0, "learner_workers": 1}
HELD_OUT_SAMPLES = 8


@dataclass(frozen=True)
class LearningCase:
    users_per_batch: int  # K
    users: int  # N
    seconds: float
    judgments: int  # given during the window
    updates: int  # users updated (published or not)
    published: int
    waiting: int  # judgments not trained on at the end
    lag_p50_s: float
    lag_p95_s: float

    @property
    def users_per_minute(self) -> float:
        return 60.0 * self.updates / self.seconds


def answer_pool(settings: Settings, prompts: int = 16) -> list[CompletionRecord]:
    """Three answers to each of ``prompts`` prompts from the base model, with features."""
    engine = Engine(settings)
    engine.start()
    requests = [EngineRequest(engine.encode_chat([{"role": "user", "content": prompt}]),
                              SamplingParams(max_tokens=24, temperature=1.0, seed=i), n=3)
                for i, prompt in enumerate(PROMPTS[:prompts])]
    records = []
    for request, prompt, result in zip(requests, PROMPTS, engine.generate_batch(requests),
                                       strict=False):
        records.append(CompletionRecord(
            "", "", settings.served_model_name, None, [{"role": "user", "content": prompt}],
            request.prompt_ids, result.choices, features=result.features))
    return records


class SimulatedUsers:
    """``users`` users ranking answers from ``pool`` at a steady rate, on a thread."""

    def __init__(self, redis_url: str, pool: list[CompletionRecord], users: int,
                 period_s: float) -> None:
        self.redis_url, self.pool, self.users, self.period_s = redis_url, pool, users, period_s
        self.given = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    async def _run(self) -> None:
        store = FeedbackStore.from_url(self.redis_url, 3600)
        started = time.monotonic()
        due = [started + self.period_s * user / self.users for user in range(self.users)]
        try:
            while not self._stop.is_set():
                user = min(range(self.users), key=due.__getitem__)
                await asyncio.sleep(max(0.0, due[user] - time.monotonic()))
                if self._stop.is_set():
                    break
                answer = self.pool[(self.given + user) % len(self.pool)]
                record = dataclasses.replace(answer, completion_id=f"bench-{uuid.uuid4().hex}",
                                             user_id=f"user{user}")
                await store.save_completion(record)
                # every user likes the choices in the order 2, 0, 1: their taste is not
                # what is measured here, the time it takes to be trained on is
                await store.append_feedback(FeedbackEvent(record.user_id, record.completion_id,
                                                          "ranking", ranking=[2, 0, 1]), None)
                self.given += 1
                due[user] += self.period_s
        finally:
            await store.client.aclose()


def run_case(settings: Settings, pool: list[CompletionRecord], users_per_batch: int,
             users: int, period_s: float, duration_s: float) -> LearningCase:
    client = redis.Redis.from_url(settings.effective_redis_url)
    client.flushdb()
    case_settings = settings.model_copy(update={"learner_users_per_batch": users_per_batch})
    loop = LearnerLoop(case_settings, "bench", LearnerOptions(
        refine_updates=0, held_out_samples=HELD_OUT_SAMPLES))
    simulated = SimulatedUsers(settings.effective_redis_url, pool, users, period_s)
    stop = threading.Event()
    learner = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    started = time.monotonic()
    simulated.start()
    learner.start()
    time.sleep(duration_s)
    simulated.stop()
    ended = time.time()
    seconds = time.monotonic() - started
    stop.set()
    loop.scheduler.abandoning.set()  # the update in progress is dropped at its next renewal
    learner.join()
    lags = [float(x) for x in client.lrange(FEEDBACK_LAG_KEY, 0, -1)]
    waiting = []
    for user in range(users):
        trained = int(client.hget(user_key(f"user{user}"), "learner_examples_trained") or 0)
        for raw in client.lrange(examples_key(f"user{user}"), trained, -1):
            waiting.append(ended - TrainingExample.from_json(raw).accepted_at)
    every = lags + waiting  # not yet trained on: at least as old as it is now
    return LearningCase(
        users_per_batch, users, seconds, simulated.given, len(loop.updates),
        sum(outcome.decision.publish for outcome in loop.updates), len(waiting),
        lag_quantile(every, 0.5) if every else float("nan"),
        lag_quantile(every, 0.95) if every else float("nan"))


def run_bench_scale_learning(redis_url: str, user_counts: list[int], users_per_batch: int,
                             period_s: float, duration_s: float, console: Console,
                             base_model: str | None = None) -> list[LearningCase]:
    """Every N of ``user_counts`` at K = 1 and at ``users_per_batch``, one after another."""
    torch.set_num_threads(1)
    logging.getLogger("learners").setLevel(logging.ERROR)  # a rejected update is not news here
    workdir = Path(tempfile.mkdtemp(prefix="tailor-bench-learning-"))
    update = {**LEARNING_SETTINGS, "redis_url": redis_url, "adapter_store": str(workdir / "store"),
              "data_dir": workdir}
    if base_model is not None:
        update["base_model"] = base_model
    settings = Settings().model_copy(update=update)
    cases = []
    try:
        with console.status("generating the simulated users' answers ..."):
            pool = answer_pool(settings)
        for users in user_counts:
            for k in sorted({1, users_per_batch}):
                with console.status(f"{users} users, K = {k}: {duration_s:.0f} s ..."):
                    cases.append(run_case(settings, pool, k, users, period_s, duration_s))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_cases(cases, period_s, console)
    return cases


def print_cases(cases: list[LearningCase], period_s: float, console: Console) -> None:
    table = Table(title=f"feedback lag, one learner worker, each user a judgment every "
                        f"{period_s:.0f} s (not yet trained on: counted at its age)")
    for column in ("users N", "K", "judgments", "updates/min", "published", "waiting at end",
                   "lag p50 s", "lag p95 s"):
        table.add_column(column, justify="right")
    for case in cases:
        table.add_row(str(case.users), str(case.users_per_batch), str(case.judgments),
                      f"{case.users_per_minute:.1f}", str(case.published), str(case.waiting),
                      f"{case.lag_p50_s:.1f}", f"{case.lag_p95_s:.1f}")
    console.print(table)
    for k in sorted({case.users_per_batch for case in cases}):
        lag = {case.users: case.lag_p95_s for case in cases if case.users_per_batch == k}
        if 4 in lag and 16 in lag:
            console.print(f"K = {k}: lag p95 at 16 users / at 4 users = "
                          f"{lag[16] / lag[4]:.2f} (target <= 2 with K = 8)")


def figures(cases: list[LearningCase]) -> dict:
    """``{"lag_p95_s": {"K": {"N": s}}, "lag_p50_s": ..., "users_per_minute": ...}``."""
    out: dict[str, dict[str, dict[str, float]]] = {
        "lag_p95_s": {}, "lag_p50_s": {}, "users_per_minute": {}, "waiting_at_end": {}}
    for case in cases:
        k, n = str(case.users_per_batch), str(case.users)
        out["lag_p95_s"].setdefault(k, {})[n] = case.lag_p95_s
        out["lag_p50_s"].setdefault(k, {})[n] = case.lag_p50_s
        out["users_per_minute"].setdefault(k, {})[n] = case.users_per_minute
        out["waiting_at_end"].setdefault(k, {})[n] = case.waiting
    return out
