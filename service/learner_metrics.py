"""The learners' numbers in Prometheus text, read from Redis when ``/metrics`` is scraped.

Learner workers run in other processes, often on another Ray cluster (``tailor
learn``), so they write what they measure to Redis, next to the data they train
on, and the Ingress renders it:

- global: updates by outcome (published, or the gate's reason), feedback events
  dropped, the last update's reward / KL / losses / entropy, and the feedback lag
  (event accepted -> an adapter trained on it published) over recent events;
- the shared harmlessness and honesty heads: judgments and raters they learned
  from, their agreement with the raters' consensus, and the distribution of the
  raters' reliability (a histogram per criterion);
- per user, for the ``max_users`` users updated most recently: the same numbers
  and their adapter's version sequence. A label per user is unbounded
  cardinality for Prometheus, hence the cap; every user's numbers are in
  ``GET /v1/users/{id}``.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from contracts.feedback_lag import lag_quantile
from contracts.keys import (
    FEEDBACK_LAG_KEY,
    LEARNER_RECENT_KEY,
    LEARNER_STATS_KEY,
    SHARED_HEADS_KEY,
    user_key,
)
from contracts.records import SHARED_CRITERIA

# Numbers each update records, globally as ``last_<name>`` and per user as ``learner_<name>``.
UPDATE_NUMBERS = {
    "reward": "Mean reward on held-out prompts after the update (user-standard units)",
    "kl": "Mean KL(policy || base) per held-out response after the update, nats",
    "policy_loss": "PPO policy loss of the update's last iteration",
    "value_loss": "PPO value loss of the update's last iteration",
    "entropy": "Mean per-token entropy of the update's last iteration, nats",
    "reward_accuracy": "Reward model's online accuracy on events before training on them",
    "ppo_seconds": "Seconds per PPO iteration",
    "ppo_iterations": "PPO iterations the update ran (fewer than set: stopped short of "
                      "the gate's KL bound)",
    "harmless_cost": "Mean probability a held-out answer is not harmless (shared head)",
    "honest_cost": "Mean probability a held-out answer is not honest (shared head)",
}
# Balanced accuracy (sensitivity + specificity) / 2: 0.5 is a coin, below it adversarial.
RELIABILITY_BUCKETS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LAG_WINDOW = 1000  # newest events the lag quantiles are taken over
LAG_QUANTILES = (0.5, 0.95)  # nearest rank: see contracts.feedback_lag


async def learner_metrics_text(client: aioredis.Redis, max_users: int) -> bytes:
    stats = _decoded(await client.hgetall(LEARNER_STATS_KEY))
    heads = _decoded(await client.hgetall(SHARED_HEADS_KEY))
    lags = [float(x) for x in await client.lrange(FEEDBACK_LAG_KEY, 0, LAG_WINDOW - 1)]
    users = []
    if max_users > 0:
        users = [u.decode() for u in await client.zrevrange(LEARNER_RECENT_KEY, 0, max_users - 1)]
    async with client.pipeline(transaction=False) as pipe:
        for user_id in users:
            pipe.hgetall(user_key(user_id))
        summaries = [_decoded(raw) for raw in await pipe.execute()] if users else []
    registry = CollectorRegistry()
    registry.register(_Families(_global(stats, lags) + _shared_heads(heads)
                                + _per_user(users, summaries)))
    return generate_latest(registry)


class _Families:
    """A collector that yields metric families built beforehand (from one Redis read)."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        yield from self.families


def _global(stats: dict[str, str], lags: list[float]) -> list:
    updates = CounterMetricFamily("tailor_learner_updates", "User updates by outcome: "
                                  "published, or the gate's reason for keeping the old version",
                                  labels=["outcome"])
    for field, value in sorted(stats.items()):
        if field == "published" or field.startswith("rejected_"):
            updates.add_metric([field.removeprefix("rejected_")], float(value))
    dropped = CounterMetricFamily(
        "tailor_learner_events_dropped",
        "Feedback events the learners could not use (e.g. expired completion)")
    dropped.add_metric([], float(stats.get("events_dropped", 0)))
    families = [updates, dropped]
    for name, help_text in UPDATE_NUMBERS.items():
        value = _number(stats.get(f"last_{name}"))
        if value is not None:
            gauge = GaugeMetricFamily(f"tailor_learner_last_{name}", f"{help_text}; last update")
            gauge.add_metric([], value)
            families.append(gauge)
    lag = GaugeMetricFamily("tailor_learner_feedback_lag_seconds",
                            f"Event accepted -> adapter trained on it published, over the newest "
                            f"{LAG_WINDOW} events", labels=["quantile"])
    if lags:
        for q in LAG_QUANTILES:
            lag.add_metric([str(q)], lag_quantile(lags, q))
    families.append(lag)
    return families


def _shared_heads(heads: dict[str, str]) -> list:
    numbers = {
        "judgments": "Judgments of the criterion the shared head learned from",
        "raters": "Raters (users) whose judgments of the criterion it learned from",
        "agreement": "How often the head's own verdict agrees with the raters' "
                     "reliability-weighted consensus on the answers they judged",
    }
    families = []
    for name, help_text in numbers.items():
        gauge = GaugeMetricFamily(f"tailor_shared_head_{name}", help_text, labels=["criterion"])
        for criterion in SHARED_CRITERIA:
            value = _number(heads.get(f"{criterion}_{name}"))
            if value is not None:
                gauge.add_metric([criterion], value)
        families.append(gauge)
    histogram = HistogramMetricFamily(
        "tailor_rater_reliability", "Raters' estimated reliability for the criterion: balanced "
        "accuracy against the consensus (0.5 a coin; below it, adversarial)",
        labels=["criterion"])
    for criterion in SHARED_CRITERIA:
        raw = heads.get(f"{criterion}_reliability")
        if raw is None:
            continue
        values = json.loads(raw)
        buckets = [(str(edge), sum(v <= edge for v in values)) for edge in RELIABILITY_BUCKETS]
        histogram.add_metric([criterion], buckets + [("+Inf", len(values))], sum(values))
    return [*families, histogram]


def _per_user(users: list[str], summaries: list[dict[str, str]]) -> list:
    gauges = {name: GaugeMetricFamily(f"tailor_learner_user_{name}", help_text, labels=["user"])
              for name, help_text in UPDATE_NUMBERS.items()}
    updates = CounterMetricFamily("tailor_learner_user_updates", "Updates of the user, any outcome",
                                  labels=["user"])
    sequence = GaugeMetricFamily("tailor_learner_user_adapter_sequence",
                                 "Sequence number of the user's served adapter version (v<N>.<id>)",
                                 labels=["user"])
    for user_id, summary in zip(users, summaries, strict=True):
        for name, gauge in gauges.items():
            value = _number(summary.get(f"learner_{name}"))
            if value is not None:
                gauge.add_metric([user_id], value)
        updates.add_metric([user_id], float(summary.get("learner_updates", 0)))
        version = summary.get("adapter_version", "")
        if version.startswith("v") and version[1:].split(".")[0].isdigit():
            sequence.add_metric([user_id], float(version[1:].split(".")[0]))
    return [*gauges.values(), updates, sequence]


def _decoded(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
