"""`tailor learn`: the learner workers on their own, e.g. a GPU cluster beside the servers.

They need the same Redis (``REDIS_URL``) and adapter store (``TAILOR_ADAPTER_STORE``)
as the servers; nothing else connects the two halves.
"""

from __future__ import annotations

import os
import signal
import threading

import redis
from rich.console import Console

from contracts.settings import Settings

console = Console()


def run_learners(ray_address: str | None = None) -> None:
    settings = Settings()
    if settings.redis_url is None:
        raise SystemExit("tailor learn needs REDIS_URL: the Redis the servers write feedback to")
    redis.Redis.from_url(settings.redis_url).ping()
    import ray

    from learners.pool import LearnerPool

    address = ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        temp_dir = (settings.data_dir / "ray-learn").resolve()
        temp_dir.mkdir(parents=True, exist_ok=True)
        ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, _temp_dir=str(temp_dir),
                 logging_level="WARNING")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    pool = LearnerPool(settings, {"redis_url": settings.redis_url})
    pool.start()
    console.print(f"[green]{settings.learner_workers} learner worker(s) running[/] against "
                  f"{settings.redis_url}; Ctrl-C stops them")
    stop.wait()
    # as in `tailor up`: each worker finishes its update within the drain time, or drops it
    # and releases the user's lease, rather than leaving the lease to expire
    pool.stop(grace_s=settings.drain_timeout_s)
    ray.shutdown()
