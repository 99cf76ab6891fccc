"""The HTTP API over a real socket (uvicorn, in-process generator) and a real Redis."""

import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import redis
import torch

from contracts.adapter_store import AdapterRegistry, AdapterStore, publish_adapter
from contracts.keys import FEEDBACK_STREAM, adapter_pointer_key, reward_sketch_key
from contracts.records import CompletionRecord
from contracts.reward_sketch import RewardSketch
from contracts.settings import Settings
from tests.conftest import redis_snapshot
from tests.local_server import local_server

ALICE = {"X-User-Id": "alice"}


@pytest.fixture(scope="module")
def settings(serving_model_dir: Path, redis_server, tmp_path_factory) -> Settings:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("api")
    return Settings(base_model=str(serving_model_dir), adapter_store=str(root / "store"),
                    data_dir=root, redis_url=redis_server.url, max_comment_chars=100,
                    max_correction_chars=200, extra_feedback_criteria=["concise"])


@pytest.fixture(scope="module")
def server(settings: Settings):
    with local_server(settings) as url:
        yield url


@pytest.fixture
def client(server, redis_client) -> openai.OpenAI:  # redis_client: a flushed database per test
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, user: str, n: int = 1, **kw):
    return client.chat.completions.create(
        model="tailor-base", messages=[{"role": "user", "content": "how do I boil an egg"}],
        n=n, max_tokens=6, extra_headers={"X-User-Id": user}, **kw)


def post_feedback(server: str, body: dict, headers: dict = ALICE) -> httpx.Response:
    return httpx.post(f"{server}/v1/feedback", json=body, headers=headers)


def test_chat_completion_has_the_openai_shape_and_is_recorded(client, server, redis_client):
    out = ask(client, "alice", n=3)
    assert out.object == "chat.completion" and out.model == "tailor-base"
    assert [c.index for c in out.choices] == [0, 1, 2]
    # 6 tokens for a choice cut at max_tokens; 1 to 6 (its EOS included) for one that
    # ended with EOS (rare with the random test model, but sampling is not seeded here)
    reasons = [c.finish_reason for c in out.choices]
    assert set(reasons) <= {"length", "stop"}
    full = reasons.count("length")
    assert 6 * full + (3 - full) <= out.usage.completion_tokens <= 3 * 6
    assert out.system_fingerprint == "tailor-base"
    stored = redis_client.hgetall(f"tailor:completion:{out.id}")
    assert stored[b"user_id"] == b"alice" and stored[b"n"] == b"3"
    assert b"features" in stored and b"prompt_token_ids" in stored


def test_models_lists_the_base_model(server):
    body = httpx.get(f"{server}/v1/models").json()
    assert [m["id"] for m in body["data"]] == ["tailor-base"]


def test_every_response_carries_a_request_id_and_echoes_a_valid_one(server):
    generated = httpx.get(f"{server}/v1/models").headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    mine = "0f8fad5b-d9cb-469f-a165-70867728950e"  # a uuid4, as the client's own id
    assert httpx.get(f"{server}/v1/models", headers={"X-Request-ID": mine}).headers[
        "x-request-id"] == mine
    refused = httpx.post(f"{server}/v1/feedback", json={"type": "stars"}, headers=ALICE)
    assert refused.status_code == 422 and len(refused.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"completion_id": "chatcmpl-unknown"}, 404, "completion_id"),
        ({"choice": 3}, 422, "choice"),
        ({"value": "meh"}, 422, "value"),
        ({"type": "ranking", "ranking": [0, 0, 1]}, 422, "ranking"),
        ({"type": "ranking", "ranking": [0, 1]}, 422, "ranking"),
        ({"type": "ranking", "ranking": [2, 1, 0, 3]}, 422, "ranking"),
        ({"comment": "x" * 101}, 413, "comment"),
        ({"type": "stars", "stars": 5}, 422, None),
        ({"criterion": "funny"}, 422, "criterion"),
        ({"type": "ranking", "ranking": [2, 1, 0], "criterion": "Honest"}, 422, "criterion"),
        ({"score": 11}, 422, "score"),
        ({"score": 0}, 422, "score"),
        ({"type": "score", "value": None}, 422, "score"),  # a score without its score
        ({"type": "score", "value": None, "score": 7, "choice": 5}, 422, "choice"),
        ({"type": "correction", "value": None}, 422, "correction"),
        ({"type": "correction", "value": None, "correction": "  \n"}, 422, "correction"),
        ({"type": "correction", "value": None, "correction": "x" * 201}, 413, "correction"),
        ({"type": "correction", "correction": "better"}, 422, "value"),  # no thumb on it
    ],
)
def test_bad_feedback_gets_its_status_and_error_body_and_changes_nothing(
    client, server, redis_client, change, status, param
):
    out = ask(client, "alice", n=3)
    body = {"completion_id": out.id, "type": "thumbs", "choice": 0, "value": "up", **change}
    if body["type"] == "ranking":
        body.pop("choice"), body.pop("value")
    body = {k: v for k, v in body.items() if v is not None}
    before = redis_snapshot(redis_client)
    response = post_feedback(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param:
        assert error["param"] == param
    assert redis_snapshot(redis_client) == before


def test_a_judgment_names_its_criterion_and_a_thumb_may_carry_a_score(
    client, server, redis_client
):
    out = ask(client, "alice", n=2)
    thumb = {"completion_id": out.id, "type": "thumbs", "choice": 1, "value": "up", "score": 9,
             "criterion": "honest"}
    ranking = {"completion_id": out.id, "type": "ranking", "ranking": [1, 0]}  # helpful
    custom = {**thumb, "criterion": "concise", "score": None}  # an operator's criterion
    assert [post_feedback(server, body).status_code for body in (thumb, ranking, custom)] == [
        201, 201, 201]
    events = [fields for _, fields in redis_client.xrange(FEEDBACK_STREAM)]
    assert [(e[b"criterion"], e.get(b"score")) for e in events] == [
        (b"honest", b"9"), (b"helpful", None), (b"concise", None)]
    view = httpx.get(f"{server}/v1/users/alice", headers=ALICE).json()
    assert view["feedback"]["by_criterion"] == {"honest": 1, "helpful": 1, "concise": 1}
    # the same thumb about another criterion is another judgment, not a duplicate
    assert post_feedback(server, {**thumb, "criterion": "harmless"}).status_code == 201
    assert post_feedback(server, thumb).status_code == 200


def test_a_score_alone_and_a_correction_are_judgments_of_their_own(client, server, redis_client):
    out = ask(client, "alice", n=2)
    score = {"completion_id": out.id, "type": "score", "choice": 0, "score": 3}
    correction = {"completion_id": out.id, "type": "correction", "choice": 1,
                  "correction": "Boil it for 7 minutes, then cool it in cold water.",
                  "criterion": "honest", "comment": "the time was wrong"}
    assert [post_feedback(server, body).status_code for body in (score, correction)] == [201, 201]
    events = [fields for _, fields in redis_client.xrange(FEEDBACK_STREAM)]
    assert events[0][b"type"] == b"score" and events[0][b"score"] == b"3"
    assert b"value" not in events[0]
    assert events[1][b"type"] == b"correction" and events[1][b"choice"] == b"1"
    assert events[1][b"correction"].decode() == correction["correction"]
    feedback = httpx.get(f"{server}/v1/users/alice", headers=ALICE).json()["feedback"]
    assert (feedback["scores"], feedback["corrections"], feedback["total"]) == (1, 1, 2)
    assert feedback["by_criterion"] == {"helpful": 1, "honest": 1}
    # sent again (a client retrying): recorded once; another correction is another judgment
    assert post_feedback(server, correction).status_code == 200
    assert post_feedback(server, {**correction, "correction": "Boil it 9 minutes."}).status_code == 201


def test_feedback_on_another_users_completion_is_forbidden(client, server, redis_client):
    out = ask(client, "alice")
    before = redis_snapshot(redis_client)
    response = post_feedback(server, {"completion_id": out.id, "type": "thumbs", "value": "up"},
                             headers={"X-User-Id": "mallory"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_your_completion"
    assert redis_snapshot(redis_client) == before


def test_ranking_a_single_choice_completion_is_refused(client, server, redis_client):
    out = ask(client, "alice", n=1)
    before = redis_snapshot(redis_client)
    response = post_feedback(server, {"completion_id": out.id, "type": "ranking", "ranking": [0]})
    assert response.status_code == 422 and "2 or more choices" in response.json()["error"]["message"]
    assert redis_snapshot(redis_client) == before


def test_feedback_without_a_user_is_unauthorized(client, server, redis_client):
    out = ask(client, "alice")
    response = post_feedback(server, {"completion_id": out.id, "type": "thumbs", "value": "up"}, headers={})
    assert response.status_code == 401
    assert redis_client.xlen(FEEDBACK_STREAM) == 0


def test_a_retried_feedback_with_the_same_idempotency_key_is_stored_once(client, server, redis_client):
    out = ask(client, "alice", n=3)
    body = {"completion_id": out.id, "type": "ranking", "ranking": [2, 0, 1]}
    headers = {**ALICE, "Idempotency-Key": "retry-me"}
    first, second = post_feedback(server, body, headers), post_feedback(server, body, headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["duplicate"] and second.json()["id"] == first.json()["id"]
    assert redis_client.xlen(FEEDBACK_STREAM) == 1
    event = redis_client.xrange(FEEDBACK_STREAM)[0][1]
    assert event[b"ranking"] == b"[2, 0, 1]" and event[b"user_id"] == b"alice"


def test_a_newly_published_adapter_is_used_by_the_next_request(client, settings, adapter_dirs):
    greedy = {"temperature": 0.0}
    base = ask(client, "alice", **greedy)
    registry = AdapterRegistry(redis.Redis.from_url(settings.effective_redis_url))
    store = AdapterStore(settings.adapter_store_uri)
    v1 = publish_adapter(store, registry, "alice", adapter_dirs[0])
    first = ask(client, "alice", **greedy)
    v2 = publish_adapter(store, registry, "alice", adapter_dirs[1])
    second = ask(client, "alice", **greedy)
    assert (first.system_fingerprint, second.system_fingerprint) == (f"tailor-{v1}", f"tailor-{v2}")
    texts = {base.choices[0].message.content, first.choices[0].message.content,
             second.choices[0].message.content}
    assert len(texts) == 3
    other = ask(client, "bob", **greedy)  # bob has no adapter: the base model
    assert other.choices[0].message.content == base.choices[0].message.content


def test_user_view_and_forgetting_a_user(client, server, settings, redis_client, adapter_dirs):
    out = ask(client, "alice", n=2)
    post_feedback(server, {"completion_id": out.id, "type": "ranking", "ranking": [1, 0]})
    post_feedback(server, {"completion_id": out.id, "type": "thumbs", "choice": 1, "value": "down"})
    registry = AdapterRegistry(redis.Redis.from_url(settings.effective_redis_url))
    version = publish_adapter(AdapterStore(settings.adapter_store_uri), registry, "alice", adapter_dirs[0])
    view = httpx.get(f"{server}/v1/users/alice", headers=ALICE).json()
    assert view["adapter_version"] == version
    assert view["feedback"] == {"thumbs_up": 0, "thumbs_down": 1, "rankings": 1, "scores": 0,
                                "corrections": 0, "total": 2, "by_criterion": {"helpful": 2},
                                "gold_checks": 0}
    # nothing trained yet: 2 pending, 6 more before the learners update (min_feedback 8)
    assert view["training"] == {"pending": 2, "until_next_update": 6}
    (hour,) = view["history"]  # both judgments in this hour
    assert hour["judgments"] == 2 and 0 <= time.time() - hour["hour"] < 3600
    assert httpx.get(f"{server}/v1/users/alice", headers={"X-User-Id": "bob"}).status_code == 403

    assert httpx.delete(f"{server}/v1/users/alice", headers=ALICE).status_code == 200
    assert httpx.get(f"{server}/v1/users/alice", headers=ALICE).status_code == 404
    assert redis_client.xlen(FEEDBACK_STREAM) == 0
    assert not Path(settings.adapter_store_uri, "alice").exists()
    after = ask(client, "alice")
    assert after.system_fingerprint == "tailor-base"


def test_an_adapter_that_cannot_be_loaded_is_a_503_not_a_bad_request(client, redis_client):
    # The pointer names a version whose files are not in the store (e.g. deleted by hand).
    redis_client.hset(adapter_pointer_key("alice"), "version", "v000099")
    with pytest.raises(openai.InternalServerError) as err:
        ask(client, "alice")
    assert err.value.status_code == 503
    assert "adapter could not be loaded" in err.value.body["message"]
    assert err.value.body["param"] is None
    assert ask(client, "bob").choices  # the engine goes on serving everyone else


def test_chat_request_errors_are_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "alice", n=9)
    assert err.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, "alice", temperature=3)
    assert err.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tailor-base", messages=[])
    assert err.value.status_code == 400


def metric_value(text: str, sample: str) -> float:
    """One sample's value in Prometheus text (summed over label sets)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(sample + " ") or line.startswith(sample + "{"))


def test_health_readiness_and_metrics(client, server):
    before = httpx.get(f"{server}/metrics").text
    ask(client, "alice", n=2)  # not streamed: its first token is timed too
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").json() == {"ready": True, "model": True, "redis": True}
    metrics = httpx.get(f"{server}/metrics").text
    for name in ("tailor_requests_total", "tailor_request_latency_seconds", "tailor_generated_tokens_total",
                 "tailor_batch_rows", "tailor_adapters_cached", "tailor_time_to_first_token_seconds",
                 "tailor_adapters_host_cached", "tailor_adapter_host_cache_bytes"):
        assert name in metrics
    ttft = "tailor_time_to_first_token_seconds"
    assert metric_value(metrics, ttft + "_count") == metric_value(before, ttft + "_count") + 1
    first_token_s = metric_value(metrics, ttft + "_sum") - metric_value(before, ttft + "_sum")
    latency_s = (metric_value(metrics, "tailor_request_latency_seconds_sum")
                 - metric_value(before, "tailor_request_latency_seconds_sum"))
    assert 0 < first_token_s < latency_s


def test_readiness_fails_when_redis_is_unreachable(serving_model_dir, tmp_path):
    settings = Settings(base_model=str(serving_model_dir), data_dir=tmp_path,
                        adapter_store=str(tmp_path / "s"), redis_url="redis://127.0.0.1:1/0")
    with local_server(settings) as url:
        response = httpx.get(f"{url}/readyz")
    assert response.status_code == 503 and response.json()["redis"] is False


def test_api_keys_decide_the_user_and_headers_cannot_override(serving_model_dir, redis_server, redis_client, tmp_path):
    settings = Settings(base_model=str(serving_model_dir), data_dir=tmp_path, adapter_store=str(tmp_path / "s"),
                        redis_url=redis_server.url, api_keys={"sk-alice": "alice"})
    with local_server(settings) as url:
        anonymous = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            ask(anonymous, "alice")
        alice = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-alice", max_retries=0)
        out = ask(alice, "bob")  # the X-User-Id header claims bob; the key says alice
    assert redis_client.hget(f"tailor:completion:{out.id}", "user_id") == b"alice"


def test_a_gateway_key_serves_and_takes_feedback_for_the_user_its_header_names(
    serving_model_dir, redis_server, redis_client, tmp_path
):
    settings = Settings(base_model=str(serving_model_dir), data_dir=tmp_path,
                        adapter_store=str(tmp_path / "s"), redis_url=redis_server.url,
                        api_keys={"sk-alice": "alice"}, gateway_keys=["sk-webui"])
    webui = {"Authorization": "Bearer sk-webui"}
    with local_server(settings) as url:
        gateway = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-webui", max_retries=0)
        out = gateway.chat.completions.create(
            model="tailor-base", messages=[{"role": "user", "content": "hi"}], n=2,
            max_tokens=4, extra_headers={"X-OpenWebUI-User-Id": "bob"})
        ranking = {"completion_id": out.id, "type": "ranking", "ranking": [1, 0]}
        as_carol = httpx.post(f"{url}/v1/feedback", json=ranking,
                              headers={**webui, "X-OpenWebUI-User-Id": "carol"})
        as_bob = httpx.post(f"{url}/v1/feedback", json=ranking,
                            headers={**webui, "X-OpenWebUI-User-Id": "bob"})
        bob_view = httpx.get(f"{url}/v1/users/bob",
                             headers={**webui, "X-OpenWebUI-User-Id": "bob"}).json()
    assert redis_client.hget(f"tailor:completion:{out.id}", "user_id") == b"bob"
    assert as_carol.status_code == 403 and as_bob.status_code == 201
    assert bob_view["feedback"]["rankings"] == 1


def test_a_comparison_shows_the_candidates_the_users_reward_picks(client, server, redis_client):
    """``compare: true``: 2n candidates sampled, the n shown are those heads drawn from the
    user's reward sketch pick (service.comparison); without a sketch, plain samples."""
    before = httpx.get(f"{server}/metrics").text
    first = ask(client, "alice", n=2, seed=7, extra_body={"compare": True})
    assert len(first.choices) == 2  # no reward of alice yet: sampled as asked
    # the 4 candidates a compare request with n=2 samples are a plain request's n=4
    plain = ask(client, "alice", n=4, seed=7)
    features = CompletionRecord.from_redis(
        plain.id, redis_client.hgetall(f"tailor:completion:{plain.id}")).features
    reward = np.random.default_rng(0).standard_normal(features.shape[1]).astype(np.float32)
    certain = RewardSketch(offset=reward, offset_bias=np.zeros(1, np.float32),
                           projection=np.zeros((1, features.shape[1]), np.float32),
                           projection_bias=np.ones(1, np.float32),
                           mean=np.zeros(1, np.float32), covariance=np.zeros((1, 1), np.float32))
    redis_client.set(reward_sketch_key("alice"), certain.to_bytes())
    compared = ask(client, "alice", n=2, seed=7, extra_body={"compare": True})
    best = [int(i) for i in sorted(np.argsort(-(features @ reward))[:2])]
    assert best != [0, 1]  # else this seed could not tell choosing from taking the first n
    assert [c.message.content for c in compared.choices] == [
        plain.choices[i].message.content for i in best]
    kept = CompletionRecord.from_redis(
        compared.id, redis_client.hgetall(f"tailor:completion:{compared.id}"))
    assert len(kept.choices) == 2 and np.array_equal(kept.features, features[best])
    after = httpx.get(f"{server}/metrics").text
    counter = "tailor_comparisons_total"
    assert (metric_value(after, counter + '{chosen_by="thompson"}')
            == metric_value(before, counter + '{chosen_by="thompson"}') + 1)
    assert (metric_value(after, counter + '{chosen_by="sampled"}')
            == metric_value(before, counter + '{chosen_by="sampled"}') + 1)
    # an unreadable sketch is no error: plain samples, logged
    redis_client.set(reward_sketch_key("alice"), b"not a sketch")
    assert len(ask(client, "alice", n=2, extra_body={"compare": True}).choices) == 2
