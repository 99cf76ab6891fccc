"""A replica lets only so many rows wait: beyond ``max_queued_rows`` a request is refused at
once with 429, OpenAI's rate-limit body and Retry-After, and admitted requests still finish."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import torch

from contracts.settings import Settings
from tests.local_server import local_server

CHAT = {"model": "tailor-base", "messages": [{"role": "user", "content": "tell me a story"}],
        "max_tokens": 48, "temperature": 0.0}


def test_a_burst_beyond_the_queue_bound_gets_429_at_once_and_the_rest_is_served(
    serving_model_dir: Path, redis_server, redis_client, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                        data_dir=tmp_path, redis_url=redis_server.url, max_batch_size=1,
                        max_queued_rows=1, batch_wait_ms=0)

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*[
                client.post(f"{url}/v1/chat/completions", json=CHAT,
                            headers={"X-User-Id": f"u{i}"}) for i in range(8)])

    with local_server(settings) as url:
        responses = asyncio.run(burst(url))
        metrics = httpx.get(f"{url}/metrics").text
    statuses = sorted(r.status_code for r in responses)
    refused = [r for r in responses if r.status_code == 429]
    assert set(statuses) == {200, 429}, statuses
    assert len(refused) >= 1 and statuses.count(200) >= 2, statuses
    for response in refused:
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        assert "limit 1" in error["message"]
    assert f"tailor_requests_refused_queue_full_total {float(len(refused))}" in metrics
