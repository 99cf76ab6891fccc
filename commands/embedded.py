"""The embedded default: everything on one machine, no configuration.

Starts a local ``redis-server`` (own port and data folder, AOF on) unless
``REDIS_URL`` is set, a local Ray instance, the Serve application and, when
asked, the learner workers; stops them all on Ctrl-C or SIGTERM, in this order:

1. the Ingress drains: new requests get 503 ``shutting_down``, those in flight
   finish (``TAILOR_DRAIN_TIMEOUT_S`` at most; ``service.draining`` says why Serve's
   own shutdown is not enough); meanwhile each learner finishes its update or, when
   the same time is up, drops it and releases the user's lease;
2. Serve and Ray stop (the Generator's adapter listener ends with its replica);
3. Redis stops last, so nothing above meets a dead Redis and loops on reconnecting.

A second Ctrl-C skips the waiting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

from commands.redis_server import RedisServer
from contracts.modeling import check_model_folder
from contracts.settings import DEFAULT_MODEL_DIR, Settings

console = Console()


@contextlib.contextmanager
def embedded_redis(settings: Settings) -> Iterator[str]:
    """The Redis URL to use; starts (and later stops) our own server if none is configured."""
    if settings.redis_url:
        yield settings.redis_url
        return
    url = settings.embedded_redis_url
    try:
        redis.Redis.from_url(url).ping()
        console.print(f"[yellow]reusing the Redis already on port {settings.redis_port}[/]")
        yield url
        return
    except redis.ConnectionError:
        pass
    server = RedisServer(settings.redis_port, settings.data_dir / "redis", settings.redis_fsync)
    server.start()
    console.print(f"redis-server on {server.url} (AOF, appendfsync {settings.redis_fsync}, "
                  f"data in {server.data_dir})")
    try:
        yield server.url
    finally:
        server.stop()


def ensure_base_model(settings: Settings) -> None:
    """Build the default model on first use; a configured model must already exist."""
    if settings.base_model or (DEFAULT_MODEL_DIR / "config.json").is_file():
        check_model_folder(settings.base_model_path)
        return
    console.print("building the default model (first use) ...")
    from simulation.cli import model_build

    model_build(out=DEFAULT_MODEL_DIR, seed=0, steps=None, verify=False)


def start_ray(settings: Settings) -> None:
    import ray

    temp_dir = (settings.data_dir / "ray").resolve()
    if len(str(temp_dir)) > 60:  # Ray's unix sockets live under it: paths are limited to 107 bytes
        temp_dir = Path(tempfile.mkdtemp(prefix="tailor-ray-"))
    temp_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=os.cpu_count() or 2,
        include_dashboard=False,
        _temp_dir=str(temp_dir),
        logging_level="WARNING",
        log_to_driver=True,
    )


def serve_app(settings: Settings, args: dict[str, Any]) -> None:
    from ray import serve

    from service.app import APP_NAME, build_app

    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)


def run_embedded(with_learners: bool = True, stop: threading.Event | None = None) -> None:
    settings = Settings()
    ensure_base_model(settings)
    stop = stop or threading.Event()
    _on_signals(stop)
    with embedded_redis(settings) as redis_url:
        args = {"redis_url": redis_url, "data_dir": str(Path(settings.data_dir).resolve())}
        os.environ["REDIS_URL"] = redis_url  # learners and replicas read the same Redis
        start_ray(settings)
        _on_signals(stop)  # again: ray.init replaced the SIGTERM handler with sys.exit
        import ray
        from ray import serve

        try:
            serve_app(settings, args)
            learners = None
            if with_learners and settings.learner_workers > 0:
                learners = _start_learners(settings, args)
            console.print(
                f"[green]Tailor is up[/]: http://{settings.host}:{settings.port}/v1 "
                f"(model {settings.served_model_name}); Ctrl-C stops it"
            )
            stop.wait()
            drain(settings, learners)
        finally:
            console.print("stopping ...")
            serve.shutdown()
            ray.shutdown()


def _on_signals(stop: threading.Event) -> None:
    """The first SIGINT/SIGTERM starts the graceful shutdown; a second one hurries it."""

    def first(signum: int, frame: Any) -> None:
        console.print(f"[yellow]{signal.Signals(signum).name}: draining[/] (at most the "
                      "drain timeout; Ctrl-C again to stop at once)")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler)  # KeyboardInterrupt: skip the waits
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, first)


def drain(settings: Settings, learners: Any | None) -> None:
    """Step 1 of the shutdown (module docstring): the Ingress drains while the learners end."""
    from ray import serve

    from service.app import APP_NAME

    timeout_s = settings.drain_timeout_s
    draining = serve.get_deployment_handle("Ingress", APP_NAME).drain.remote(timeout_s)
    if learners is not None:
        learners.stop(grace_s=timeout_s)
    left = draining.result(timeout_s=timeout_s + 30)
    if left:
        console.print(f"[yellow]{left} request(s) still in flight after {timeout_s:g} s: cut[/]")
    else:
        console.print("drained: every request in flight finished")


def _start_learners(settings: Settings, args: dict[str, Any]):
    from learners.pool import LearnerPool

    with console.status(f"starting {settings.learner_workers} learner worker(s) ..."):
        pool = LearnerPool(settings, args)
        pool.start()
    return pool
