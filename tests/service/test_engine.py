"""The engine against peft: mixed-adapter batches give what each adapter gives alone."""

import asyncio
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from contracts.adapter_store import AdapterStore
from contracts.settings import Settings
from service.batching_engine import BatchingEngine
from service.engine import Engine, EngineRequest
from service.engine_interface import (
    GenerationFailure,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def engine(serving_model_dir: Path, adapter_dirs: list[Path], tmp_path_factory) -> Engine:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("engine")
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(root / "store"),
                        data_dir=root, adapter_cache_size=2, max_batch_size=8)
    store = AdapterStore(settings.adapter_store_uri)
    for i, path in enumerate(adapter_dirs):
        store.put(f"user{i}", "v1", path)
    engine = Engine(settings)
    engine.start()
    return engine


def peft_greedy(base_dir: Path, adapter_dir: Path | None, prompt: list[int],
                tokens: int) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir).eval()
    ids = torch.tensor([prompt])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                         do_sample=False)
    return out[0, len(prompt):].tolist()


def prompt_of(engine: Engine, text: str) -> list[int]:
    return engine.encode_chat([{"role": "user", "content": text}])


def test_mixed_batch_rows_match_each_adapter_alone_and_differ(engine, serving_model_dir,
                                                              adapter_dirs):
    short, long = prompt_of(engine, "hi"), prompt_of(engine, "how do I boil an egg for breakfast")
    requests = [
        EngineRequest(long, GREEDY, user_id="user0", adapter_version="v1"),
        EngineRequest(short, GREEDY, user_id="user1", adapter_version="v1"),
        EngineRequest(long, GREEDY),  # base model, same batch
    ]
    results = engine.generate_batch(requests)
    tokens = [r.choices[0].token_ids for r in results]
    assert tokens[0] == peft_greedy(serving_model_dir, adapter_dirs[0], long, 12)
    assert tokens[1] == peft_greedy(serving_model_dir, adapter_dirs[1], short, 12)
    assert tokens[2] == peft_greedy(serving_model_dir, None, long, 12)
    base_on_short = engine.generate_batch([EngineRequest(short, GREEDY)])[0].choices[0].token_ids
    assert tokens[1] != base_on_short
    assert tokens[0] != tokens[2]
    assert [r.adapter_version for r in results] == ["v1", "v1", None]


def test_rows_that_finish_early_leave_the_batch_without_disturbing_the_rest(engine):
    prompt = prompt_of(engine, "name for my cat")
    together = engine.generate_batch([
        EngineRequest(prompt, SamplingParams(max_tokens=3, temperature=0.0), user_id="user0",
                      adapter_version="v1"),
        EngineRequest(prompt, SamplingParams(max_tokens=12, temperature=0.0), user_id="user1",
                      adapter_version="v1"),
    ])
    alone = engine.generate_batch([EngineRequest(prompt, GREEDY, user_id="user1",
                                                 adapter_version="v1")])
    assert len(together[0].choices[0].token_ids) == 3
    assert together[0].choices[0].finish_reason == "length"
    assert together[1].choices[0].token_ids == alone[0].choices[0].token_ids


def test_n_choices_of_a_seeded_request_differ_and_repeat_exactly(engine):
    prompt = prompt_of(engine, "my house is too hot")
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=123)
    first = engine.generate_batch([EngineRequest(prompt, params, n=3)])[0]
    again = engine.generate_batch([EngineRequest(prompt_of(engine, "other"), params),
                                   EngineRequest(prompt, params, n=3)])[1]
    texts = [c.token_ids for c in first.choices]
    assert len(set(map(tuple, texts))) == 3
    assert texts == [c.token_ids for c in again.choices]


def test_stop_string_ends_a_choice_and_is_not_returned(engine):
    prompt = prompt_of(engine, "how do I boil an egg")
    free = engine.generate_batch([EngineRequest(prompt, GREEDY)])[0].choices[0].text
    stop = free[4:6]
    assert stop and stop in free
    result = engine.generate_batch([EngineRequest(prompt, SamplingParams(12, 0.0, stop=[stop]))])[0]
    assert result.choices[0].finish_reason == "stop"
    assert result.choices[0].text == free[: free.find(stop)]


def test_streaming_does_not_change_where_a_stop_string_cuts(engine):
    # Streamed rows find stop strings in the incrementally decoded text, which may
    # split a stop string across two pieces; unstreamed rows in the final text.
    prompt = prompt_of(engine, "how do I boil an egg")
    free = engine.generate_batch([EngineRequest(prompt, GREEDY)])[0].choices[0].text
    for stop in (free[2:4], free[5:11], free[len(free) // 2 :][:7]):
        params = SamplingParams(12, 0.0, stop=[stop])
        deltas: list[str] = []
        plain, streamed = (
            engine.generate_batch([EngineRequest(prompt, params, on_delta=on_delta)])[0].choices[0]
            for on_delta in (None, lambda i, text: deltas.append(text))
        )
        assert plain.text == streamed.text == free[: free.find(stop)]
        assert "".join(deltas) == streamed.text and streamed.finish_reason == "stop"


def test_streamed_deltas_add_up_to_the_final_text(engine):
    deltas: dict[int, list[str]] = {0: [], 1: []}
    request = EngineRequest(prompt_of(engine, "tips for sleeping"), SamplingParams(10, 1.0, seed=5),
                                n=2, on_delta=lambda i, text: deltas[i].append(text))
    result = engine.generate_batch([request])[0]
    for i, choice in enumerate(result.choices):
        assert "".join(deltas[i]) == choice.text
        assert len(deltas[i]) > 1


def test_features_are_base_model_features_whatever_the_adapter(engine):
    prompt = prompt_of(engine, "hi")
    with_adapter, without = engine.generate_batch([
        EngineRequest(prompt, GREEDY, user_id="user0", adapter_version="v1"),
        EngineRequest(prompt, GREEDY),
    ])
    assert with_adapter.features.shape == (1, 2 * engine.base.model.config.hidden_size)
    # same text again through the base model gives the same features as recorded
    replay = engine.generate_batch([EngineRequest(prompt, GREEDY)])[0]
    assert torch.allclose(torch.from_numpy(replay.features), torch.from_numpy(without.features),
                          atol=1e-5)
    assert not torch.allclose(torch.from_numpy(with_adapter.features),
                              torch.from_numpy(without.features))


def test_cache_evicts_least_recently_used_and_never_a_pinned_adapter(engine):
    cache = engine.cache  # two slots
    for user in ("user0", "user1", "user2"):
        cache.release(cache.acquire(user, "v1"))
    assert ("user0", "v1") not in cache.cached()
    pinned = cache.acquire("user1", "v1")
    other = cache.acquire("user0", "v1")  # must evict user2, not the pinned user1
    assert set(cache.cached()) == {("user1", "v1"), ("user0", "v1")}
    with pytest.raises(Exception, match="every adapter slot is in use"):
        cache.acquire("user2", "v1")
    cache.release(pinned)
    cache.release(other)


def test_a_missing_adapter_fails_its_request_only(engine):
    prompt = prompt_of(engine, "hi")
    outcomes = engine.generate_batch([
        EngineRequest(prompt, GREEDY, user_id="ghost", adapter_version="v9"),
        EngineRequest(prompt, GREEDY),
    ])
    assert "missing from the store" in str(outcomes[0])
    assert len(outcomes[1].choices[0].token_ids) == 12


def run_to_end(engine: Engine, joiners_after: int, first: list[EngineRequest],
               joiners: list[EngineRequest]) -> tuple[dict[int, object], list[int]]:
    """Admit ``first``, step ``joiners_after`` times, admit ``joiners``, step to the end.

    Returns each request's result by ``id`` and the order in which requests finished.
    """
    results, order = {}, []
    assert engine.admit(first) == [None] * len(first)
    for step in range(10_000):
        if step == joiners_after:
            assert engine.admit(joiners) == [None] * len(joiners)
        for request, result in engine.step():
            results[id(request)] = result
            order.append(id(request))
        finished_all = len(results) == len(first) + len(joiners)
        if step >= joiners_after and not engine.running_rows and finished_all:
            return results, order
    raise AssertionError("the engine never finished")


def test_requests_that_join_a_running_batch_get_what_they_get_alone(engine, serving_model_dir,
                                                                    adapter_dirs):
    long_prompt = prompt_of(engine, "how do I boil an egg for breakfast")
    short = prompt_of(engine, "hi")
    seeded = SamplingParams(max_tokens=12, temperature=1.0, seed=7)
    running = EngineRequest(long_prompt, SamplingParams(max_tokens=30, temperature=0.0),
                                user_id="user0", adapter_version="v1")
    joiners = [
        EngineRequest(short, GREEDY, user_id="user1", adapter_version="v1"),
        EngineRequest(short, GREEDY),  # base model
        EngineRequest(long_prompt, seeded, n=2, user_id="user1", adapter_version="v1"),
    ]
    results, order = run_to_end(engine, 5, [running], joiners)

    assert results[id(running)].choices[0].token_ids == peft_greedy(
        serving_model_dir, adapter_dirs[0], long_prompt, 30)
    assert results[id(joiners[0])].choices[0].token_ids == peft_greedy(
        serving_model_dir, adapter_dirs[1], short, 12)
    assert results[id(joiners[1])].choices[0].token_ids == peft_greedy(
        serving_model_dir, None, short, 12)
    alone = engine.generate_batch([EngineRequest(long_prompt, seeded, n=2, user_id="user1",
                                                     adapter_version="v1")])[0]
    assert [c.token_ids for c in results[id(joiners[2])].choices] == [
        c.token_ids for c in alone.choices]
    # the joiners (12 tokens from step 5) were returned before the 30-token request ended
    assert order[-1] == id(running)


def test_a_request_that_ends_at_its_first_token_is_returned_by_the_step_that_runs_its_prompt(
        engine):
    one = EngineRequest(prompt_of(engine, "hi"), SamplingParams(max_tokens=1, temperature=0.0))
    assert engine.admit([one]) == [None]
    assert engine.running_rows == 1  # admitted: its prompt runs with the next step
    (request, result), = engine.step()
    assert request is one and len(result.choices[0].token_ids) == 1
    assert result.choices[0].finish_reason == "length"
    assert engine.running_rows == 0


def test_a_prompt_longer_than_max_prompt_tokens_is_refused_and_one_at_the_limit_is_served(
        serving_model_dir, tmp_path):
    # The limit is counted in the model's own tokens (chat template included) by the
    # BatchingEngine, before the request reaches the batch: an over-long prompt must come
    # back as OpenAI's context_length_exceeded on `messages`, not be decoded.
    torch.set_num_threads(1)
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                        data_dir=tmp_path, max_prompt_tokens=16)
    batching = BatchingEngine(settings)
    batching.start()
    words = "put the egg in boiling water for seven minutes and open the windows at night".split()
    by_length = {}  # prompt tokens -> messages; each word is one token of this tokenizer
    for k in range(1, len(words) + 1):
        messages = [{"role": "user", "content": " ".join(words[:k])}]
        by_length[len(batching.engine.encode_chat(messages))] = messages

    async def events_for(*prompts: list[dict]) -> list[list]:
        # one event loop for both: the Batcher's task lives on the loop that first used it
        events = []
        for messages in prompts:
            request = GenerationRequest(messages, SamplingParams(max_tokens=2, temperature=0.0))
            events.append([event async for event in batching.generate(request)])
        return events

    at_limit, over = asyncio.run(events_for(by_length[16], by_length[17]))
    assert isinstance(at_limit[-1], GenerationResult)
    assert len(at_limit[-1].prompt_token_ids) == 16
    (refusal,) = over
    assert isinstance(refusal, GenerationFailure)
    assert (refusal.status, refusal.code, refusal.param) == (400, "context_length_exceeded",
                                                             "messages")
    assert "17 tokens" in refusal.message


def test_prompts_longer_than_the_chunk_budget_join_over_several_steps_and_get_what_they_get_alone(
        serving_model_dir, adapter_dirs, tmp_path):
    torch.set_num_threads(1)
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                        data_dir=tmp_path, adapter_cache_size=2, max_batch_size=8,
                        prefill_chunk_tokens=16)
    store = AdapterStore(settings.adapter_store_uri)
    for i, path in enumerate(adapter_dirs[:2]):
        store.put(f"user{i}", "v1", path)
    engine = Engine(settings)
    engine.start()
    running = EngineRequest(prompt_of(engine, "hi"), SamplingParams(max_tokens=30, temperature=0.0),
                            user_id="user0", adapter_version="v1")
    long_a = prompt_of(engine, "how do I boil an egg for breakfast when the pan is small")
    long_b = prompt_of(engine, "what should I cook tonight for four hungry friends")
    assert len(long_a) > 16 and len(long_b) > 16  # each takes more than one step's budget
    joiners = [EngineRequest(long_a, GREEDY, user_id="user1", adapter_version="v1"),
               EngineRequest(long_b, GREEDY)]
    engine.admit([EngineRequest(long_a, GREEDY)])
    engine.step()  # 16 of its tokens: not yet done
    assert engine.joining_rows == 1 and engine.running_rows == 1
    engine.abort()
    results, _ = run_to_end(engine, 3, [running], joiners)

    assert results[id(running)].choices[0].token_ids == peft_greedy(
        serving_model_dir, adapter_dirs[0], running.prompt_ids, 30)
    assert results[id(joiners[0])].choices[0].token_ids == peft_greedy(
        serving_model_dir, adapter_dirs[1], long_a, 12)
    assert results[id(joiners[1])].choices[0].token_ids == peft_greedy(
        serving_model_dir, None, long_b, 12)


def test_prompt_and_answer_stay_within_the_models_context(serving_model_dir, tmp_path):
    """The test model knows 512 positions; the server would accept 1024 prompt tokens. A
    longer prompt gets context_length_exceeded naming the model's context, and an answer
    stops with "length" where the context ends, whatever max_tokens asked for."""
    torch.set_num_threads(1)
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                        data_dir=tmp_path, max_prompt_tokens=1024)
    batching = BatchingEngine(settings)
    batching.start()
    context = batching.engine.context_tokens
    assert context == 512
    words = "put the egg in boiling water for seven minutes and open the windows".split()

    def messages_of(length: int) -> tuple[list[dict], int]:
        """The shortest messages whose prompt has at least ``length`` tokens, and its length."""
        for count in range(1, 1000):
            messages = [{"role": "user", "content": " ".join((words * 80)[:count])}]
            tokens = len(batching.engine.encode_chat(messages))
            if tokens >= length:
                return messages, tokens
        raise AssertionError(f"no prompt of {length} tokens")

    async def events_for(*prompts: list[dict]) -> list[list]:
        events = []
        for messages in prompts:
            request = GenerationRequest(messages, SamplingParams(max_tokens=20, temperature=0.0,
                                                                 ignore_eos=True))
            events.append([event async for event in batching.generate(request)])
        return events

    (near, near_length), (too_long, _) = messages_of(context - 8), messages_of(context)
    near_end, over = asyncio.run(events_for(near, too_long))
    (choice,) = near_end[-1].choices
    assert len(choice.token_ids) == context - near_length < 20
    assert choice.finish_reason == "length"
    (refusal,) = over
    assert (refusal.status, refusal.code) == (400, "context_length_exceeded")
    assert f"{context} tokens" in refusal.message and f"the {context - 1} this" in refusal.message
