"""Run the Tailor API in this process with uvicorn on a free port (no Ray).

The same ``create_api`` + ``GeneratorCore`` that the Ray Serve deployments wrap;
starts in about a second, so most HTTP tests use it, and the Ray Serve app is
exercised separately in test_serve_app.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from commands.redis_server import free_port
from contracts.settings import Settings
from service.api import create_api
from service.batching_engine import BatchingEngine
from service.engine_interface import GenerationEngine
from service.feedback_store import FeedbackStore
from service.generation import GeneratorCore


@contextmanager
def local_server(
    settings: Settings, engine_cls: type[GenerationEngine] = BatchingEngine
) -> Iterator[str]:
    """Serve the API at the yielded base URL (``http://127.0.0.1:PORT``) until exit."""
    core = GeneratorCore(settings, engine_cls)
    core.start()
    port = free_port()
    ready = threading.Event()
    holder: dict = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        store = FeedbackStore.from_url(settings.effective_redis_url, settings.completion_ttl_s,
                                       settings.redis_timeout_s)
        api = create_api(settings, core, store)
        config = uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", loop="asyncio")
        server = uvicorn.Server(config)
        holder["server"] = server
        ready.set()
        loop.run_until_complete(server.serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        holder["server"].should_exit = True
        thread.join(timeout=10)
        core.stop()
