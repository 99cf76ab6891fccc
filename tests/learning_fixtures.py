"""Feedback through the real HTTP API, for learner tests."""

from __future__ import annotations

import httpx
import openai


def give_rankings(url: str, user: str, count: int, start: int = 0) -> list[str]:
    """``count`` chat requests with n=3 by ``user``, each ranked [2, 0, 1]; returns event ids."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    event_ids = []
    for i in range(start, start + count):
        out = client.chat.completions.create(
            model="tailor-base", messages=[{"role": "user", "content": f"question number {i}"}],
            n=3, max_tokens=6, extra_headers={"X-User-Id": user})
        response = httpx.post(f"{url}/v1/feedback", headers={"X-User-Id": user},
                              json={"completion_id": out.id, "type": "ranking", "ranking": [2, 0, 1]})
        response.raise_for_status()
        event_ids.append(response.json()["id"])
    return event_ids
