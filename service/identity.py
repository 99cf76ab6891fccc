"""Who is asking: the user a request is served (and trained) for.

DESIGN.md decision 10, in order of trust: an API key mapped to a user; a
trusted gateway header (``X-User-Id``, Open WebUI's ``X-OpenWebUI-User-Id``);
the body's ``user`` / ``safety_identifier``.

- With keys configured (``TAILOR_API_KEYS``, ``TAILOR_GATEWAY_KEYS``) every
  request needs one. A user's key is that user: it cannot claim another by
  header or body. A gateway key (Open WebUI holds one for all its users) names
  the user with the trusted headers, else the body's ``user``.
- Without keys, the headers are trusted when ``TAILOR_TRUST_USER_HEADERS`` is on
  (a gateway in front), else only the body's ``user`` names the user.
"""

from __future__ import annotations

import hmac
import re

from starlette.datastructures import Headers

from contracts.settings import Settings
from service.errors import APIError

USER_HEADERS = ("x-user-id", "x-openwebui-user-id")
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$")


def validate_user_id(user_id: str, source: str) -> str:
    if not _USER_ID.match(user_id):
        raise APIError(
            400,
            f"{source} {user_id[:64]!r} is not a valid user id: use 1-128 letters, digits "
            "and _ . @ : + - (starting with a letter or digit)",
            param=source,
            code="invalid_user",
        )
    return user_id


def _bearer(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def resolve_user(settings: Settings, headers: Headers, body_user: str | None = None) -> str | None:
    """The request's user id, or None (served by the base model, no feedback)."""
    if settings.api_keys or settings.gateway_keys:
        token = _bearer(headers)
        if token is None:
            raise APIError(401, "missing API key: send Authorization: Bearer <key>", code="invalid_api_key")
        for key, user_id in settings.api_keys.items():
            if hmac.compare_digest(token.encode(), key.encode()):
                return user_id  # a user's key is that user, whatever the headers claim
        for key in settings.gateway_keys:
            if hmac.compare_digest(token.encode(), key.encode()):
                return _named_user(headers, body_user)
        raise APIError(401, "unknown API key", code="invalid_api_key")
    if settings.trust_user_headers:
        return _named_user(headers, body_user)
    if body_user:
        return validate_user_id(body_user, "user")
    return None


def _named_user(headers: Headers, body_user: str | None) -> str | None:
    """The user a trusted gateway names: its headers first, then the body's ``user``."""
    for header in USER_HEADERS:
        if value := headers.get(header):
            return validate_user_id(value, header)
    if body_user:
        return validate_user_id(body_user, "user")
    return None
