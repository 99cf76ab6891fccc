"""The running batch's tensors: joining and dropping rows keeps every row's logits."""

import torch
from transformers import AutoModelForCausalLM

from service.running_batch import RunningBatch

PROMPTS = [[5, 9, 12, 40, 41, 42, 43, 44, 45, 46, 47], [7, 8], [30, 31, 32, 33, 34]]


def model_of(serving_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(serving_model_dir).eval()


def alone(model, prompt: list[int], tokens: list[int]) -> list[torch.Tensor]:
    """Next-token logits of ``prompt`` fed ``tokens`` one by one, in a batch of its own."""
    batch, logits = RunningBatch.prefill(model, [prompt], pad_id=0, device=torch.device("cpu"))
    out = [logits[0]]
    for token in tokens:
        out.append(batch.decode(model, [token])[0])
    return out


@torch.inference_mode()
def test_rows_joined_mid_decode_give_the_logits_they_give_alone(serving_model_dir):
    model = model_of(serving_model_dir)
    feed = [[50 + i, 60 + i, 70 + i] for i in range(3)]
    batch, first = RunningBatch.prefill(model, PROMPTS[:1], pad_id=0, device=torch.device("cpu"))
    batch.decode(model, [feed[0][0]])
    joined, _ = RunningBatch.prefill(model, PROMPTS[1:], pad_id=0, device=torch.device("cpu"))
    batch.join(joined)  # row 0 is 12 columns wide, the joiners 2 and 5
    assert batch.rows == 3 and batch.width == 12
    logits = batch.decode(model, [feed[0][1], feed[1][0], feed[2][0]])
    for row, (prompt, tokens, fed) in enumerate(zip(PROMPTS, feed, [2, 1, 1], strict=True)):
        expected = alone(model, prompt, tokens[:fed])[fed]
        assert torch.allclose(logits[row], expected, atol=1e-5), row


@torch.inference_mode()
def test_dropping_the_widest_row_cuts_the_columns_no_one_attends_to(serving_model_dir):
    model = model_of(serving_model_dir)
    batch, _ = RunningBatch.prefill(model, PROMPTS, pad_id=0, device=torch.device("cpu"))
    batch.decode(model, [50, 51, 52])
    batch.keep([2, 1])  # the 11-token prompt leaves; order changes too
    assert batch.width == len(PROMPTS[2]) + 1
    assert all(layer.keys.shape[-2] == batch.width for layer in batch.cache.layers)
    logits = batch.decode(model, [61, 60])
    assert torch.allclose(logits[0], alone(model, PROMPTS[2], [52, 61])[2], atol=1e-5)
    assert torch.allclose(logits[1], alone(model, PROMPTS[1], [51, 60])[2], atol=1e-5)
    assert batch.joinable


def test_only_full_attention_models_are_joinable(serving_model_dir):
    from transformers import AutoConfig, MistralConfig

    assert RunningBatch.model_joinable(AutoConfig.from_pretrained(serving_model_dir))
    assert not RunningBatch.model_joinable(MistralConfig(num_hidden_layers=2, sliding_window=16))
