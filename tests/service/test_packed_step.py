"""A packed step: decode and prompt chunks in one forward give the logits of separate ones."""

import pytest
import torch

from service import packed_step
from service.packed_step import Chunk, PackedStep
from service.running_batch import RunningBatch
from tests.service.test_running_batch import PROMPTS, alone, model_of

CPU = torch.device("cpu")
JOINERS = [[11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23], [90, 91, 92], [80, 81, 82, 83]]


@pytest.fixture(scope="module")
def model(serving_model_dir):
    model = model_of(serving_model_dir)
    packed_step.install(model)
    return model


def running(model) -> RunningBatch:
    """PROMPTS prefilled, then one token decoded: rows of different widths."""
    batch, _ = RunningBatch.prefill(model, PROMPTS, pad_id=0, device=CPU)
    batch.decode(model, [50, 51, 52])
    return batch


@torch.inference_mode()
def test_decode_rows_and_whole_prompts_in_one_forward_match_separate_forwards(model):
    batch = running(model)
    step = PackedStep(batch, [60, 61, 62], [Chunk(p, 0, True) for p in JOINERS], None, CPU)
    decoded, joined = step.forward(model, [60, 61, 62] + [t for p in JOINERS for t in p])
    for row, (prompt, fed) in enumerate(zip(PROMPTS, [[50, 60], [51, 61], [52, 62]])):
        assert torch.allclose(decoded[row], alone(model, prompt, fed)[2], atol=1e-5), row
    for row, prompt in enumerate(JOINERS):
        assert torch.allclose(joined[row], alone(model, prompt, [])[0], atol=1e-5), row
    # the joiners' KV joins the running batch: the next decode sees both
    batch.join(step.group)
    logits = batch.decode(model, [70, 71, 72, 73, 74, 75])
    for row, prompt in enumerate(JOINERS):
        assert torch.allclose(logits[3 + row], alone(model, prompt, [73 + row])[1], atol=1e-5)


@torch.inference_mode()
def test_one_prompt_alone_takes_the_causal_path_and_matches_a_prefill(model):
    batch = running(model)
    step = PackedStep(batch, [60, 61, 62], [Chunk(JOINERS[0], 0, True)], None, CPU)
    assert step.alone and step.chunk_mask is None
    decoded, joined = step.forward(model, [60, 61, 62] + JOINERS[0])
    assert torch.allclose(joined[0], alone(model, JOINERS[0], [])[0], atol=1e-5)
    assert torch.allclose(decoded[1], alone(model, PROMPTS[1], [51, 61])[2], atol=1e-5)


@torch.inference_mode()
def test_a_prompt_run_in_chunks_over_steps_gives_the_logits_of_one_prefill(model):
    long, short = JOINERS[0], JOINERS[2]
    # step 1: the first 5 tokens of the long prompt, with no row decoding
    first = PackedStep(None, [], [Chunk(long[:5], 0, False)], None, CPU)
    first.forward(model, long[:5])
    carried = first.group
    # step 2: its next 5 beside a fresh short prompt, the running rows decoding
    batch = running(model)
    second = PackedStep(batch, [60, 61, 62], [Chunk(long[5:10], 5, False), Chunk(short, 0, True)],
                        carried, CPU)
    decoded, joined = second.forward(model, [60, 61, 62] + long[5:10] + short)
    assert torch.allclose(joined[1], alone(model, short, [])[0], atol=1e-5)
    assert torch.allclose(decoded[0], alone(model, PROMPTS[0], [50, 60])[2], atol=1e-5)
    # step 3: the rest of the long prompt, carried again
    third = PackedStep(None, [], [Chunk(long[10:], 10, True)], second.group.take([0]), CPU)
    _, joined = third.forward(model, long[10:])
    assert torch.allclose(joined[0], alone(model, long, [])[0], atol=1e-5)
    assert third.group.last_positions.tolist() == [[len(long) - 1]]
