"""
title: Tailor feedback
description: Sends Open WebUI's message ratings (thumbs, 1-10 rating, reason, comment) to Tailor, which trains each user's adapter on them.
author: Tailor
version: 0.1.0
license: Apache-2.0
"""

# An Open WebUI 0.12 *event* Function (a module with a class ``Event``). Install it in
# Open WebUI (Admin Panel > Functions > Import, or POST /api/v1/functions/create), turn
# it on, and set its valves: Tailor's URL and TAILOR_OPENWEBUI_SECRET (README, "Use it
# with Open WebUI").
#
# Why a function and not Open WebUI's event webhook: the webhook's feedback.created /
# feedback.updated payload holds only data.rating and the feedback id
# (open_webui/routers/evaluations.py), not the rated message, the 1-10 rating, the
# reason or the comment; it cannot send a header to authenticate with; and it refuses
# private addresses unless ENABLE_LOCAL_WEB_FETCH is on for all of Open WebUI. A
# function runs inside Open WebUI: it reads the feedback record and posts it with the
# secret. Tailor does the mapping (service/openwebui_feedback.py).
#
# Only the standard library and aiohttp (an Open WebUI dependency) at module level, so
# Tailor's tests load this file and send what it sends.

import asyncio
import logging

import aiohttp
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

FEEDBACK_EVENTS = ("feedback.created", "feedback.updated")
EVENTS_PATH = "/v1/integrations/openwebui/events"


def tailor_payload(event: dict, feedback: dict) -> dict:
    """The event as Open WebUI built it, with the feedback record it names (no chat snapshot:
    the whole conversation is not Tailor's to keep)."""
    record = {key: value for key, value in feedback.items() if key != "snapshot"}
    return {**event, "feedback": record}


async def send(tailor_url: str, secret: str, payload: dict, attempts: int = 3,
               timeout_s: float = 10.0) -> tuple[int, str]:
    """POST ``payload`` to Tailor; retries connection errors and 5xx/429 (Tailor records a
    resent rating once). Returns the last status (0: never reached) and body."""
    url = tailor_url.rstrip("/") + EVENTS_PATH
    headers = {"Authorization": f"Bearer {secret}"}
    status, text = 0, ""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    for attempt in range(attempts):
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                url, json=payload, headers=headers
            ) as response:
                status, text = response.status, await response.text()
            if status < 500 and status != 429:
                return status, text
        except (TimeoutError, aiohttp.ClientError) as err:
            status, text = 0, f"{type(err).__name__}: {err}"
        if attempt + 1 < attempts:
            await asyncio.sleep(2**attempt)
    return status, text


class Event:
    class Valves(BaseModel):
        tailor_url: str = Field(
            "http://127.0.0.1:8000", description="Tailor's base URL (without /v1).")
        secret: str = Field(
            "", description="TAILOR_OPENWEBUI_SECRET of Tailor (or its gateway key).")
        attempts: int = Field(3, ge=1, le=10, description="Tries per event.")

    def __init__(self):
        self.valves = self.Valves()

    async def event(self, event: dict, __event_name__: str = "") -> None:
        name = __event_name__ or event.get("event", "")
        if name not in FEEDBACK_EVENTS:
            return
        feedback_id = (event.get("subject") or {}).get("id")
        from open_webui.models.feedbacks import Feedbacks  # only inside Open WebUI

        feedback = await Feedbacks.get_feedback_by_id(feedback_id) if feedback_id else None
        if feedback is None:
            log.warning("Tailor feedback: feedback %s of %s not found", feedback_id, name)
            return
        payload = tailor_payload(event, feedback.model_dump())
        status, text = await send(self.valves.tailor_url, self.valves.secret, payload,
                                  self.valves.attempts)
        if status in (200, 201):
            log.info("Tailor feedback: %s %s -> %s", name, feedback_id, status)
        else:
            log.warning("Tailor feedback: %s %s refused (%s): %s", name, feedback_id, status,
                        text[:500])
