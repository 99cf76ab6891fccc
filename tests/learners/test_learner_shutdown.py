"""A learner stopped mid-update finishes it within the grace time, or drops it and releases
the user's lease at once (not ``learner_lease_s`` later); its feedback waits for the next."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from contracts.adapter_store import AdapterRegistry
from contracts.keys import PENDING_KEY, lease_key, worker_status_key
from contracts.settings import Settings
from learners.scheduler import UpdateAbandoned
from learners.user_update import UpdateOutcome
from learners.worker import LearnerLoop, LearnerWorker
from tests.learning_fixtures import give_rankings
from tests.local_server import local_server


@pytest.fixture
def settings_args(serving_model_dir: Path, redis_server, redis_client, tmp_path) -> dict:
    torch.set_num_threads(1)
    return {"base_model": str(serving_model_dir), "adapter_store": str(tmp_path / "store"),
            "data_dir": str(tmp_path), "redis_url": redis_server.url, "learner_min_feedback": 4,
            "learner_rollout_batch": 4, "learner_max_new_tokens": 8}


def wait_until_updating(redis_client, worker_id: str) -> None:
    deadline = time.monotonic() + 300  # a bound on waiting on 2 busy cores, not a speed test
    while redis_client.hget(worker_status_key(worker_id), "state") != b"updating":
        assert time.monotonic() < deadline, "the worker never started the update"
        time.sleep(0.05)


def test_a_worker_stopped_past_its_grace_drops_the_update_and_releases_the_lease(
        settings_args, redis_client):
    # an update that cannot end within the grace time (nor stop early near a KL bound)
    settings_args["learner_ppo_iterations"] = 100_000
    settings_args["learner_kl_bound"] = 1e9
    with local_server(Settings(**settings_args)) as url:
        give_rankings(url, "alice", 4)
    worker = LearnerWorker(settings_args, "w1")
    wait_until_updating(redis_client, "w1")
    assert redis_client.exists(lease_key("alice"))

    assert worker.stop(grace_s=0) == 0  # no update completed
    assert not redis_client.exists(lease_key("alice"))  # free for another worker now
    assert redis_client.hget(worker_status_key("w1"), "state") == b"stopped"
    assert AdapterRegistry(redis_client).current("alice") is None  # nothing published
    assert redis_client.zscore(PENDING_KEY, "alice") == 4  # its feedback waits for the next


def test_a_worker_stopped_within_its_grace_finishes_the_update(settings_args, redis_client):
    settings_args["learner_ppo_iterations"] = 2
    with local_server(Settings(**settings_args)) as url:
        give_rankings(url, "alice", 4)
    worker = LearnerWorker(settings_args, "w1")
    wait_until_updating(redis_client, "w1")

    assert worker.stop(grace_s=600) == 1
    assert not redis_client.exists(lease_key("alice"))
    assert redis_client.zscore(PENDING_KEY, "alice") is None  # trained on
    assert redis_client.hget(worker_status_key("w1"), "state") == b"stopped"


def test_a_shutdown_mid_batch_keeps_the_users_published_before_it_and_drops_the_rest(
        settings_args, redis_client):
    """K = 2: ann's one iteration is done and published while bo's long update runs; the
    shutdown then stops bo alone: ann's outcome stays, bo's feedback waits."""
    # (no KL bound in reach: bo's update must run until the shutdown, not stop early)
    settings = Settings(**settings_args | {"learner_users_per_batch": 2, "learner_workers": 1,
                                           "learner_kl_bound": 1e9})
    with local_server(settings) as url:
        give_rankings(url, "ann", 4)
        give_rankings(url, "bo", 4)
    loop = LearnerLoop(settings, "w1")
    loop.consumer.poll(block_ms=50)
    registry = AdapterRegistry(redis_client)

    def shut_down_once_ann_is_published() -> None:
        while registry.current("ann") is None:
            time.sleep(0.02)
        loop.scheduler.abandoning.set()

    threading.Thread(target=shut_down_once_ann_is_published, daemon=True).start()
    leased = [(user, loop.scheduler.try_lease(user), iterations)
              for user, iterations in (("ann", 1), ("bo", 100_000))]
    ann, bo = loop.updater.update_many(leased, loop.scheduler)
    assert isinstance(ann, UpdateOutcome) and ann.decision.publish
    assert registry.current("ann") == ann.version
    assert isinstance(bo, UpdateAbandoned)
    assert registry.current("bo") is None
    assert redis_client.zscore(PENDING_KEY, "bo") == 4
