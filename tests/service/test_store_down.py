"""Redis down: every route that needs it answers 503 with OpenAI's error body and
Retry-After, and service resumes when Redis is back, with nothing acknowledged lost."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
import torch

from contracts.settings import Settings
from tests.local_server import local_server

ALICE = {"X-User-Id": "alice"}
CHAT = {"model": "tailor-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.mark.slow
def test_with_redis_down_each_route_says_503_with_retry_after_then_recovers(
    serving_model_dir: Path, fresh_redis, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                        data_dir=tmp_path, redis_url=fresh_redis.url, redis_timeout_s=1.0,
                        rate_limit_chat="100/minute", rate_limit_feedback="100/minute")
    with local_server(settings) as url:
        out = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=ALICE).json()
        accepted = httpx.post(f"{url}/v1/feedback", headers=ALICE, json={
            "completion_id": out["id"], "type": "thumbs", "value": "up"})
        assert accepted.status_code == 201

        fresh_redis.kill()
        refused = {
            "chat": httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=ALICE),
            "stream": httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True},
                                 headers=ALICE),
            "feedback": httpx.post(f"{url}/v1/feedback", headers=ALICE, json={
                "completion_id": out["id"], "type": "thumbs", "value": "down"}),
            "users": httpx.get(f"{url}/v1/users/alice", headers=ALICE),
        }
        for route, response in refused.items():
            assert response.status_code == 503, (route, response.text)
            assert response.headers["retry-after"] == "5", route
            assert len(response.headers["x-request-id"]) == 32, route  # names its log line
            error = response.json()["error"]
            assert error["type"] == "service_unavailable" and error["code"] == "store_unavailable"
            assert "Redis" in error["message"], route
        assert httpx.get(f"{url}/readyz").status_code == 503
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as raised:  # the SDK's 5xx error
            client.chat.completions.create(**CHAT, extra_headers=ALICE)
        assert raised.value.status_code == 503

        fresh_redis.start()
        again = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=ALICE)
        assert again.status_code == 200
        view = httpx.get(f"{url}/v1/users/alice", headers=ALICE).json()
    assert view["feedback"]["thumbs_up"] == 1  # acknowledged before the crash: kept
    assert view["feedback"]["thumbs_down"] == 0  # refused: not recorded
