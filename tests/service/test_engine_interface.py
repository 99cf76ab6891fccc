"""The Generator runs any ``GenerationEngine``: a second engine plugs in untouched.

``EchoEngine`` is a whole (if useless) engine: it answers with the last user
message. Served through the same ``GeneratorCore`` and API as today's engine,
its answers reach the OpenAI client, streamed or not, and are recorded for
feedback: nothing above the interface knows which engine runs.
"""

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from contracts.records import ChoiceRecord
from contracts.settings import Settings
from service.engine_interface import (
    GenerationEngine,
    GenerationEvent,
    GenerationRequest,
    GenerationResult,
    TextDelta,
)
from tests.local_server import local_server


class EchoEngine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = False
        self.prefetched: list[tuple[str, str | None]] = []

    def start(self) -> None:
        self.started = True

    def check_health(self) -> bool:
        return self.started

    def metrics_text(self) -> bytes:
        return b"echo_engine_requests 1.0\n"

    def load_adapter(self, user_id: str, version: str | None) -> None:
        self.prefetched.append((user_id, version))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        text = request.messages[-1]["content"][: request.params.max_tokens]
        if request.stream:
            for i in range(request.n):
                for word in text.split(" "):
                    yield TextDelta(i, word + " ")
            text = " ".join(text.split(" ")) + " "
        ids = [ord(c) for c in text]
        yield GenerationResult(
            choices=[ChoiceRecord(text, ids, "stop") for _ in range(request.n)],
            prompt_token_ids=ids, adapter_version=request.adapter_version,
        )


def test_the_interface_is_five_methods_and_echo_engine_has_them_all():
    methods = {name for name in vars(GenerationEngine) if not name.startswith("_")}
    assert methods == {"start", "generate", "load_adapter", "check_health", "metrics_text"}
    assert all(callable(getattr(EchoEngine, name)) for name in methods)


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("echo")
    settings = Settings(adapter_store=str(root / "store"), data_dir=root,
                        redis_url=redis_server.url)
    with local_server(settings, engine_cls=EchoEngine) as url:
        yield url


def test_another_engine_serves_the_api_unchanged(server, redis_client):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    question = [{"role": "user", "content": "plain words echo back"}]
    out = client.chat.completions.create(model="tailor-base", messages=question, n=2,
                                         extra_headers={"X-User-Id": "alice"})
    assert [c.message.content for c in out.choices] == ["plain words echo back"] * 2
    assert out.usage.completion_tokens == 2 * len("plain words echo back")
    streamed = client.chat.completions.create(model="tailor-base", messages=question,
                                              stream=True, extra_headers={"X-User-Id": "alice"})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == "plain words echo back "
    rated = httpx.post(f"{server}/v1/feedback", headers={"X-User-Id": "alice"},
                       json={"completion_id": out.id, "type": "ranking", "ranking": [1, 0]})
    assert rated.status_code == 201
    assert httpx.get(f"{server}/readyz").json()["model"] is True
    assert "echo_engine_requests 1.0" in httpx.get(f"{server}/metrics").text


def test_the_application_builder_binds_the_given_engine_to_the_generator(tmp_path):
    # The Ray Serve path must carry another engine to the Generator replicas just as
    # local_server does; checked on the bound graph, without starting Ray. Ray 2.60 keeps
    # a bound deployment (and its init args) in Application._bound_deployment.
    from service.app import Generator, application

    settings = Settings(adapter_store=str(tmp_path / "store"), data_dir=tmp_path)
    ingress = application(settings, engine_cls=EchoEngine)._bound_deployment
    generator_app, ingress_settings = ingress.init_args
    generator = generator_app._bound_deployment
    assert generator.func_or_class is Generator.func_or_class  # the class behind @serve.deployment
    assert generator.init_args == (settings, EchoEngine) and not generator.init_kwargs
    assert ingress_settings is settings
