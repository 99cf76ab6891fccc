"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.schemas import FEEDBACK_TYPES

log = logging.getLogger(__name__)
# What a client is told to wait before retrying when Redis is unreachable: a
# restarting redis-server (AOF replay of a small data set) is back within seconds.
STORE_RETRY_AFTER_S = 5
# The routes that follow OpenAI's API (the rest are Tailor's own).
OPENAI_ROUTES = ("/v1/chat/completions", "/v1/models")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class APIError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        retry_after_s: int | None = None, headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {
        "error": {
            "message": message,
            "type": _TYPE_BY_STATUS.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(err: APIError) -> JSONResponse:
    headers = dict(err.headers)
    if err.retry_after_s is not None:
        headers["Retry-After"] = str(err.retry_after_s)
    return JSONResponse(error_body(err.status, err.message, err.param, err.code), err.status,
                        headers=headers)


def store_unavailable() -> JSONResponse:
    body = error_body(503, "the feedback store (Redis) is unreachable; nothing was recorded. "
                      f"Retry in {STORE_RETRY_AFTER_S} s", code="store_unavailable")
    return JSONResponse(body, 503, headers={"Retry-After": str(STORE_RETRY_AFTER_S)})


def _validation_status(request: Request) -> int:
    # OpenAI answers malformed requests to its routes with 400, as clients of them expect;
    # Tailor's own APIs (feedback, gold checks, integrations) use 422 (the body parsed
    # but is not a valid judgment).
    return 400 if request.url.path.startswith(OPENAI_ROUTES) else 422


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        location = [str(p) for p in first.get("loc", ())]
        if location[:1] == ["body"]:
            # drop the discriminator tag pydantic puts first in the path of a tagged
            # union (a feedback type: "score" is also a field name further on)
            location = location[2:] if location[1:2] and location[1] in FEEDBACK_TYPES else location[1:]
        param = ".".join(location) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        status = _validation_status(request)
        return JSONResponse(error_body(status, message, param, "invalid_value"), status)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _store_down(request: Request, err: Exception) -> JSONResponse:
        # Nothing was acknowledged: the Lua script that records a judgment is atomic,
        # so the client's retry (same Idempotency-Key) records it once.
        # the id is a request header in both paths: set by Serve's proxy, or (in process)
        # by the correlation-id middleware, which writes it into the request too
        log.error("request %s, %s %s: Redis unreachable: %s",
                  request.headers.get("x-request-id"), request.method, request.url.path, err)
        return store_unavailable()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(err.status_code, str(err.detail)), err.status_code)
