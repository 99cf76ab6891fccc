"""Which Open WebUI message a chat request answers, from the headers Open WebUI sends.

Open WebUI's ratings name its own message id, never the completion id it got
from Tailor. Its OpenAI connections can send per-connection header templates;
with ``{"X-OpenWebUI-Message-Id": "{{MESSAGE_ID}}", "X-OpenWebUI-Task":
"{{TASK}}"}`` (README, "Use it with Open WebUI") each answer names the message it
fills, and Tailor keeps message -> completion beside the completion.

Open WebUI's background tasks (chat titles, tags, follow-up suggestions) go out
with the same message id in their metadata; ``{{TASK}}`` is set for them and
empty for the answer itself, so a task's completion never takes the message's
place.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header

from service.errors import APIError

MESSAGE_HEADER = "X-OpenWebUI-Message-Id"  # Open WebUI's FORWARD_SESSION_INFO_HEADER_MESSAGE_ID
TASK_HEADER = "X-OpenWebUI-Task"
_MESSAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")  # Open WebUI's are uuid4s


def answered_message(
    message_id: Annotated[str | None, Header(alias=MESSAGE_HEADER)] = None,
    task: Annotated[str | None, Header(alias=TASK_HEADER)] = None,
) -> str | None:
    """The Open WebUI message this request answers; None for other clients and for tasks."""
    if not message_id or task:
        return None  # an empty template value: Open WebUI had no message (API callers)
    if not _MESSAGE_ID.match(message_id):
        raise APIError(
            400, f"{MESSAGE_HEADER} {message_id[:64]!r} is not a message id: use 1-128 letters, "
            "digits and _ . : - (Open WebUI's template {{MESSAGE_ID}} sends its uuid)",
            param=MESSAGE_HEADER, code="invalid_value",
        )
    return message_id


OpenWebUIMessageDep = Annotated[str | None, Depends(answered_message)]
