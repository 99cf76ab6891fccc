"""The batcher: with continuous batching a short request does not wait for a long one."""

import asyncio
from pathlib import Path

import pytest
import torch

from service.batcher import Batcher, TextDelta
from service.engine import Engine, GenerationRequest, GenerationResult, SamplingParams
from service.settings import Settings


@pytest.fixture(scope="module")
def engine(serving_model_dir: Path, tmp_path_factory) -> Engine:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("batcher")
    engine = Engine(Settings(base_model=str(serving_model_dir), adapter_store=str(root / "store"),
                             data_dir=root, max_batch_size=8))
    engine.start()
    return engine


def finishing_order(engine: Engine, continuous: bool) -> tuple[list[str], dict[str, GenerationResult]]:
    """A 200-token request starts; once it has streamed text, a 4-token one arrives."""
    prompt = engine.encode_chat([{"role": "user", "content": "how do I boil an egg"}])
    long = GenerationRequest(prompt, SamplingParams(200, 1.0, seed=1, ignore_eos=True),
                             on_delta=lambda i, text: None)
    short = GenerationRequest(prompt, SamplingParams(4, 1.0, seed=2, ignore_eos=True))
    order, results = [], {}

    async def main() -> None:
        batcher = Batcher(engine, max_batch_size=8, batch_wait_ms=0, continuous=continuous)
        started = asyncio.Event()

        async def run(name: str, request: GenerationRequest) -> None:
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
