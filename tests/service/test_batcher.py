"""The batcher: with continuous batching a short request does not wait for a long one."""

import asyncio
from pathlib import Path

import pytest
import torch

from contracts.adapter_store import AdapterStore
from contracts.settings import Settings
from service.batcher import Batcher
from service.engine import Engine, EngineRequest
from service.engine_interface import GenerationResult, SamplingParams, TextDelta


@pytest.fixture(scope="module")
def engine(serving_model_dir: Path, adapter_dirs: list[Path], tmp_path_factory) -> Engine:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("batcher")
    settings = Settings(base_model=str(serving_model_dir), adapter_store=str(root / "store"),
                        data_dir=root, max_batch_size=8)
    AdapterStore(settings.adapter_store_uri).put("user0", "v1", adapter_dirs[0])
    engine = Engine(settings)
    engine.start()
    return engine


def finishing_order(engine: Engine, continuous: bool) -> tuple[list[str], dict[str, GenerationResult]]:
    """A 200-token request starts; once it has streamed text, a 4-token one arrives."""
    prompt = engine.encode_chat([{"role": "user", "content": "how do I boil an egg"}])
    long = EngineRequest(prompt, SamplingParams(200, 1.0, seed=1, ignore_eos=True),
                             on_delta=lambda i, text: None)
    short = EngineRequest(prompt, SamplingParams(4, 1.0, seed=2, ignore_eos=True))
    order, results = [], {}

    async def main() -> None:
        batcher = Batcher(engine, max_batch_size=8, batch_wait_ms=0, continuous=continuous)
        started = asyncio.Event()

        async def run(name: str, request: EngineRequest) -> None:
            async for event in batcher.generate(request):
                if isinstance(event, TextDelta):
                    started.set()
                else:
                    order.append(name)
                    results[name] = event

        long_task = asyncio.create_task(run("long", long))
        await started.wait()
        await run("short", short)
        await long_task

    asyncio.run(main())
    return order, results


def test_a_short_request_joins_the_running_batch_and_returns_first(engine):
    order, results = finishing_order(engine, continuous=True)
    assert order == ["short", "long"]
    assert [len(results[name].choices[0].token_ids) for name in ("long", "short")] == [200, 4]


def test_without_continuous_batching_it_waits_for_the_batch_in_flight(engine):
    order, results = finishing_order(engine, continuous=False)
    assert order == ["long", "short"]
    assert len(results["short"].choices[0].token_ids) == 4


def test_an_engine_failure_fails_the_requests_it_held_and_the_next_one_runs(engine, monkeypatch):
    prompt = engine.encode_chat([{"role": "user", "content": "hi"}])
    real_step = engine.step
    calls = {"n": 0}

    def failing_step():
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("CUDA error: an illegal memory access")
        return real_step()

    monkeypatch.setattr(engine, "step", failing_step)

    async def main() -> tuple[list, GenerationResult]:
        batcher = Batcher(engine, max_batch_size=8, batch_wait_ms=5)
        doomed = [EngineRequest(prompt, SamplingParams(20, 1.0, seed=i, ignore_eos=True),
                                    user_id="user0", adapter_version="v1") for i in range(2)]

        async def outcome(request):
            try:
                return [e async for e in batcher.generate(request)][-1]
            except RuntimeError as err:
                return err

        failed = await asyncio.gather(*(outcome(r) for r in doomed))
        after = [e async for e in batcher.generate(EngineRequest(prompt, SamplingParams(5, 0.0)))]
        return failed, after[-1]

    failed, after = asyncio.run(main())
    assert [str(e) for e in failed] == ["CUDA error: an illegal memory access"] * 2
    assert len(after.choices[0].token_ids) == 5
    assert engine.running_rows == 0 and engine.cache.pinned() == 0  # the adapter slot given back
