"""The end users' page at ``/``, and ``/v1/session``, which tells it how to sign in.

The page is plain HTML, CSS and one script (``service/page/``, no build step). It
talks to the same HTTP API as any client — chat, feedback, users — with the
user's own credentials, kept in the tab's session storage and sent in headers,
never in a URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from service.deps import SettingsDep
from service.errors import APIError
from service.identity import resolve_user

PAGE_DIR = Path(__file__).resolve().parent.parent / "page"
ASSETS = {"tailor.js": "text/javascript", "tailor.css": "text/css"}
MAX_PAGE_CHOICES = 4  # answers side by side: more do not fit, nor get read
# Only the page's own script and style run: should an answer or a user name ever
# reach the DOM as markup, an injected <script> or onerror= handler still cannot
# execute. form-action 'none': a form can never be submitted by navigation, so a
# key typed into it cannot end up in a URL even if the script failed to load.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

router = APIRouter()


class Session(BaseModel):
    user_id: str | None = Field(description="The user these credentials name (None: none yet).")
    sign_in: Literal["api_key", "user_name", "unavailable"] = Field(
        description="What the page asks for: an API key (keys configured), a user name "
        "(sent as X-User-Id), or nothing works (no keys, headers not trusted).")
    model: str
    criteria: list[str] = Field(description="What a judgment may be about.")
    max_choices: int = Field(description="Most answers the page asks for at once.")


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(PAGE_DIR / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/page/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise APIError(404, f"no page asset {name!r}", code="not_found")
    return FileResponse(PAGE_DIR / name, media_type=ASSETS[name], headers=HEADERS)


@router.get("/v1/session", tags=["users"])
async def session(request: Request, settings: SettingsDep) -> Session:
    if settings.api_keys or settings.gateway_keys:
        sign_in = "api_key"
    elif settings.trust_user_headers:
        sign_in = "user_name"
    else:
        sign_in = "unavailable"
    # Without credentials yet, the page only needs to know how to sign in.
    asked = "authorization" in request.headers or sign_in != "api_key"
    return Session(
        user_id=resolve_user(settings, request.headers) if asked else None,
        sign_in=sign_in, model=settings.served_model_name,
        criteria=list(settings.feedback_criteria), max_choices=min(MAX_PAGE_CHOICES, settings.max_n),
    )
