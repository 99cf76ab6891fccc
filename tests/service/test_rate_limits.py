"""Per-user rate limits on chat and feedback: 429 with OpenAI's body, Retry-After and the
x-ratelimit headers; each user counted apart; off unless configured."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydantic
import pytest
import torch

from contracts.settings import Settings
from tests.local_server import local_server

CHAT = {"model": "tailor-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def settings_for(model: Path, redis_url: str, root: Path, **limits) -> Settings:
    return Settings(base_model=str(model), adapter_store=str(root / "store"), data_dir=root,
                    redis_url=redis_url, **limits)


def test_a_user_past_the_chat_limit_gets_429_and_others_are_not_held_back(
    serving_model_dir: Path, redis_server, redis_client, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    settings = settings_for(serving_model_dir, redis_server.url, tmp_path,
                            rate_limit_chat="3/minute", rate_limit_feedback="1/minute")
    with local_server(settings) as url:
        def ask(user: str) -> httpx.Response:
            return httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"X-User-Id": user})

        ada = [ask("ada") for _ in range(4)]
        bob = ask("bob")
        models = httpx.get(f"{url}/v1/models")
        judgments = [httpx.post(f"{url}/v1/feedback", headers={"X-User-Id": "ada"}, json={
            "completion_id": ada[0].json()["id"], "type": "thumbs", "value": value})
            for value in ("up", "down")]
    assert [r.status_code for r in judgments] == [201, 429]  # feedback has its own allowance
    assert [r.status_code for r in ada] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in ada] == ["2", "1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in ada)
    refused = ada[-1]
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert bob.status_code == 200 and bob.headers["x-ratelimit-remaining-requests"] == "2"
    assert "x-ratelimit-limit-requests" not in models.headers  # only the limited routes


def test_without_limits_configured_nothing_is_counted(
    serving_model_dir: Path, redis_server, redis_client, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    with local_server(settings_for(serving_model_dir, redis_server.url, tmp_path)) as url:
        responses = [httpx.post(f"{url}/v1/chat/completions", json=CHAT,
                                headers={"X-User-Id": "ada"}) for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 5
    assert "x-ratelimit-limit-requests" not in responses[0].headers
    assert not redis_client.keys("tailor:ratelimit*")


def test_a_bad_rate_names_the_setting_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="rate_limit_feedback") as raised:
        Settings(data_dir=tmp_path, rate_limit_feedback="lots")
    assert "60/minute" in str(raised.value)
