"""Request limits per user on chat and on feedback, shared by every Ingress replica.

Off unless configured (``TAILOR_RATE_LIMIT_CHAT``, ``TAILOR_RATE_LIMIT_FEEDBACK``, in the
`limits` library's notation, e.g. ``"60/minute"``). The windows live in Redis, so
a user gets the same allowance whichever replica answers. Moving windows rather
than token buckets (the `limits` library has no bucket): the same "N per period,
no burst above N" promise, and a refused client is told exactly when to retry.

Who is counted: the user the credentials or trusted headers name; otherwise the
API key (hashed); otherwise the client address. A refused request gets 429 with
OpenAI's ``rate_limit_exceeded`` body and ``Retry-After``; every limited route's
answer carries OpenAI's ``x-ratelimit-*-requests`` headers.
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.requests import Request

from contracts.settings import Settings
from service.errors import APIError
from service.identity import resolve_user

LIMITED_ROUTES = {"/v1/chat/completions": "chat", "/v1/feedback": "feedback"}


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.items: dict[str, RateLimitItem] = {
            route: parse(limit) for route, limit in (
                ("chat", settings.rate_limit_chat), ("feedback", settings.rate_limit_feedback))
            if limit
        }
        self.limiter = None
        if self.items:
            storage = RedisStorage(
                "async+" + settings.effective_redis_url, implementation="redispy",
                key_prefix="tailor:ratelimit", socket_timeout=settings.redis_timeout_s,
                socket_connect_timeout=settings.redis_timeout_s)
            self.limiter = MovingWindowRateLimiter(storage)

    async def check(self, request: Request) -> dict[str, str]:
        """Count the request; raise a 429 ``APIError`` past the limit; the headers to send."""
        route = LIMITED_ROUTES.get(request.url.path)
        item = self.items.get(route) if route else None
        if item is None or self.limiter is None:
            return {}
        subject = self._subject(request)
        allowed = await self.limiter.hit(item, route, subject)
        stats = await self.limiter.get_window_stats(item, route, subject)
        reset_s = max(0.0, stats.reset_time - time.time())
        headers = {"x-ratelimit-limit-requests": str(item.amount),
                   "x-ratelimit-remaining-requests": str(stats.remaining),
                   "x-ratelimit-reset-requests": f"{reset_s:.3f}s"}
        if not allowed:
            retry_after = max(1, math.ceil(reset_s))
            raise APIError(429, f"rate limit of {item.amount} {route} requests per "
                           f"{item.get_expiry()} s reached; retry in {retry_after} s",
                           code="rate_limit_exceeded", retry_after_s=retry_after,
                           headers=headers)
        return headers

    def _subject(self, request: Request) -> str:
        try:
            user = resolve_user(self.settings, request.headers)
        except APIError:  # a bad key: the route itself answers 401
            user = None
        if user is not None:
            return f"user:{user}"
        auth = request.headers.get("authorization")
        if auth:
            return "key:" + hashlib.sha256(auth.encode()).hexdigest()[:32]
        return f"address:{request.client.host if request.client else 'unknown'}"
