"""A pool of learner workers on Ray, each holding the base model once."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import ray

from contracts.settings import Settings
from learners.worker import LearnerWorker


class LearnerPool:
    def __init__(self, settings: Settings, settings_args: dict[str, Any]) -> None:
        self.settings = settings
        self.settings_args = settings_args
        self.actors: list = []

    def start(self) -> None:
        remote = ray.remote(
            num_cpus=self.settings.learner_num_cpus,
            num_gpus=self.settings.learner_num_gpus,
            max_concurrency=4,  # stop()/status() while the loop runs
            max_restarts=-1,  # a crashed worker comes back; its lease and events are recovered
        )(LearnerWorker)
        prefix = f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.actors = [
            remote.options(name=f"tailor-learner-{prefix}-{i}").remote(self.settings_args, f"{prefix}-{i}")
            for i in range(self.settings.learner_workers)
        ]
        ray.get([actor.pid.remote() for actor in self.actors])  # wait until each has loaded

    def status(self) -> list[dict]:
        return ray.get([actor.status.remote() for actor in self.actors])

    def stop(self, grace_s: float = 600.0) -> None:
        """Each worker finishes its update within ``grace_s`` or drops it and releases the
        user's lease (``LearnerWorker.stop``)."""
        if self.actors:
            ray.get([actor.stop.remote(grace_s) for actor in self.actors], timeout=grace_s + 900)
