"""Who may claim which user: a user's key, a gateway's key, or no key at all."""

import pytest
from starlette.datastructures import Headers

from contracts.settings import Settings
from service.errors import APIError
from service.identity import resolve_user

KEYED = Settings(api_keys={"sk-alice": "alice"}, gateway_keys=["sk-webui"])


def headers(key: str | None = None, **named: str) -> Headers:
    raw = {name.replace("_", "-"): value for name, value in named.items()}
    if key is not None:
        raw["authorization"] = f"Bearer {key}"
    return Headers(raw)


def test_a_gateway_key_names_its_users_by_header_then_body():
    assert resolve_user(KEYED, headers("sk-webui", x_openwebui_user_id="bob")) == "bob"
    assert resolve_user(KEYED, headers("sk-webui", x_user_id="carol")) == "carol"
    assert resolve_user(KEYED, headers("sk-webui"), body_user="dave") == "dave"
    assert resolve_user(KEYED, headers("sk-webui")) is None  # the gateway named nobody


def test_a_users_key_is_that_user_whatever_the_headers_or_body_claim():
    claimed = headers("sk-alice", x_user_id="bob", x_openwebui_user_id="bob")
    assert resolve_user(KEYED, claimed, body_user="bob") == "alice"


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_with_keys_configured_a_request_without_a_known_key_is_refused(key):
    only_gateway = Settings(gateway_keys=["sk-webui"])
    for settings in (KEYED, only_gateway):
        with pytest.raises(APIError) as err:
            resolve_user(settings, headers(key, x_user_id="bob"))
        assert err.value.status == 401 and err.value.code == "invalid_api_key"


def test_a_gateways_named_user_is_validated():
    with pytest.raises(APIError) as err:
        resolve_user(KEYED, headers("sk-webui", x_user_id="<script>"))
    assert err.value.status == 400 and err.value.param == "x-user-id"


def test_without_keys_headers_count_only_when_trusted():
    trusting, distrusting = Settings(), Settings(trust_user_headers=False)
    assert resolve_user(trusting, headers(x_user_id="bob"), body_user="eve") == "bob"
    assert resolve_user(distrusting, headers(x_user_id="bob")) is None
    assert resolve_user(distrusting, headers(x_openwebui_user_id="bob"), body_user="eve") == "eve"
