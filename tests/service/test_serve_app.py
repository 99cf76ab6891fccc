"""The Ray Serve application end to end: a real local Ray, the real openai client."""

import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import redis
import torch

from commands.redis_server import free_port
from contracts.adapter_store import AdapterRegistry, AdapterStore, publish_adapter
from tests.service.test_engine import peft_greedy

pytestmark = pytest.mark.slow
PROMPT = [{"role": "user", "content": "how do I boil an egg"}]


@pytest.fixture(scope="module")
def serve_app(serving_model_dir: Path, redis_server, tmp_path_factory):
    import ray
    from ray import serve

    from service.app import APP_NAME, build_app

    os.environ["RAY_AUTH_MODE"] = "disabled"
    root = tmp_path_factory.mktemp("serve")
    args = {"base_model": str(serving_model_dir), "adapter_store": str(root / "store"),
            "redis_url": redis_server.url, "data_dir": str(root), "batch_wait_ms": 300}
    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # unix socket paths must be short
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=ray_dir, logging_level="ERROR")
    # picked after ray.init, whose processes bind ports of their own: a port picked
    # before it was taken once in CI, and every test of this module errored
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    yield {"url": f"http://127.0.0.1:{port}", "args": args}
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def client(serve_app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serve_app['url']}/v1", api_key="unused", max_retries=0)


def test_openai_client_plain(client):
    # seeded: an unseeded sample of the random test model ends with EOS now and then
    out = client.chat.completions.create(model="tailor-base", messages=PROMPT, max_tokens=5,
                                         user="carol", seed=2)
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 5 and out.usage.prompt_tokens > 0
    assert out.system_fingerprint == "tailor-base"


def test_the_end_users_page_is_served_through_serve(serve_app):
    page = httpx.get(serve_app["url"] + "/")
    assert page.status_code == 200 and '<script src="/page/tailor.js"' in page.text
    script = httpx.get(serve_app["url"] + "/page/tailor.js")
    assert script.status_code == 200 and "textContent" in script.text  # the installed files


def test_through_serve_each_response_has_one_request_id(serve_app):
    response = httpx.get(serve_app["url"] + "/v1/models")
    (request_id,) = response.headers.get_list("x-request-id")  # Serve's proxy's, once
    assert request_id


def test_openai_client_n3(client):
    out = client.chat.completions.create(model="tailor-base", messages=PROMPT, n=3, max_tokens=5,
                                         seed=3, extra_headers={"X-User-Id": "carol"})
    assert len({c.message.content for c in out.choices}) == 3
    assert [c.finish_reason for c in out.choices] == ["length"] * 3


def test_openai_client_streaming(client):
    chunks = list(client.chat.completions.create(
        model="tailor-base", messages=PROMPT, max_tokens=6, stream=True, seed=1,
        stream_options={"include_usage": True}, extra_headers={"X-OpenWebUI-User-Id": "carol"}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 6 and not chunks[-1].choices
    assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)
    plain = client.chat.completions.create(model="tailor-base", messages=PROMPT, max_tokens=6, seed=1)
    assert streamed == plain.choices[0].message.content
    assert len({c.id for c in chunks}) == 1


def test_two_users_in_one_batch_get_their_own_adapters(client, serve_app, serving_model_dir, adapter_dirs):
    args = serve_app["args"]
    registry = AdapterRegistry(redis.Redis.from_url(args["redis_url"]))
    store = AdapterStore(args["adapter_store"])
    versions = {user: publish_adapter(store, registry, user, adapter_dirs[i])
                for i, user in enumerate(["dana", "erin"])}

    def ask(user: str):
        return client.chat.completions.create(model="tailor-base", messages=PROMPT, max_tokens=8,
                                              temperature=0, extra_headers={"X-User-Id": user})

    with ThreadPoolExecutor(3) as pool:  # concurrent: the generator batches them together
        dana, erin, base = pool.map(ask, ["dana", "erin", "frank"])
    assert dana.system_fingerprint == f"tailor-{versions['dana']}"
    assert erin.system_fingerprint == f"tailor-{versions['erin']}"
    texts = [r.choices[0].message.content for r in (dana, erin, base)]
    assert len(set(texts)) == 3

    metrics = httpx.get(f"{serve_app['url']}/metrics").text
    mixed = re.search(r'tailor_batch_distinct_adapters_bucket\{le="1.0"\} (\S+)', metrics)
    total = re.search(r"tailor_batch_distinct_adapters_count (\S+)", metrics)
    assert float(total.group(1)) > float(mixed.group(1)), "no batch held two adapters"

    torch.set_num_threads(1)
    tokenizer_ids = AdapterlessTokens(serving_model_dir)
    for response, adapter in ((dana, adapter_dirs[0]), (erin, adapter_dirs[1]), (base, None)):
        alone = tokenizer_ids.decode(peft_greedy(serving_model_dir, adapter, tokenizer_ids.prompt, 8))
        assert response.choices[0].message.content == alone


class AdapterlessTokens:
    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.prompt = list(self.tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True,
                                                              tokenize=True, return_dict=False))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def test_a_generator_replica_lost_before_answering_is_retried_not_a_500(serve_app):
    # Last in this module: it kills the module's only Generator replica.
    import time

    import ray

    (name,) = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
               if "Generator" in a["name"] and a["namespace"] == "serve"]
    replica = ray.get_actor(name, namespace="serve")
    with ThreadPoolExecutor(1) as pool:
        # the Batcher waits batch_wait_ms (300) before it admits a request: kill in between
        asking = pool.submit(httpx.post, serve_app["url"] + "/v1/chat/completions", timeout=120,
                             json={"model": "tailor-base", "messages": PROMPT, "max_tokens": 4})
        time.sleep(0.15)
        ray.kill(replica, no_restart=False)
        response = asking.result()
    assert response.status_code == 200, response.text  # answered by the restarted replica
    assert response.json()["choices"][0]["message"]["content"]
