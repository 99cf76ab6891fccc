import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from contracts.settings import Settings


def test_redis_url_is_read_without_prefix(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://db:6379/2")
    assert Settings().effective_redis_url == "redis://db:6379/2"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_URL": "localhost:6379"}, "is not a Redis URL; use redis://host:port/db"),
        ({"TAILOR_DEFAULT_MAX_TOKENS": "900"}, "exceeds TAILOR_MAX_TOKENS_LIMIT=512"),
        ({"TAILOR_LORA_RANK": "32"}, "exceeds TAILOR_MAX_LORA_RANK=16"),
        ({"TAILOR_REDIS_FSYNC": "never"}, "redis_fsync"),
        ({"TAILOR_API_KEYS": "sk-alice"}, "api_keys"),
    ],
)
def test_unsafe_or_inconsistent_settings_are_refused_with_the_fix(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, SettingsError), match=message):
        Settings()


def test_api_keys_and_target_modules_parse_from_json(monkeypatch):
    monkeypatch.setenv("TAILOR_API_KEYS", '{"sk-a": "alice"}')
    monkeypatch.setenv("TAILOR_LORA_TARGET_MODULES", '["q_proj"]')
    settings = Settings()
    assert settings.api_keys == {"sk-a": "alice"} and settings.lora_target_modules == ["q_proj"]


def test_a_key_cannot_be_both_a_users_and_a_gateways():
    with pytest.raises(ValueError, match="TAILOR_API_KEYS and TAILOR_GATEWAY_KEYS"):
        Settings(api_keys={"sk-a": "alice"}, gateway_keys=["sk-a"])


def test_gateway_keys_parse_from_json(monkeypatch):
    monkeypatch.setenv("TAILOR_GATEWAY_KEYS", '["sk-webui"]')
    assert Settings().gateway_keys == ["sk-webui"]


def test_an_operators_criterion_needs_a_plain_name():
    assert Settings(extra_feedback_criteria=["concise"]).feedback_criteria == (
        "helpful", "honest", "harmless", "concise")
    with pytest.raises(ValueError, match="criterion 'Too Long!'"):
        Settings(extra_feedback_criteria=["Too Long!"])
