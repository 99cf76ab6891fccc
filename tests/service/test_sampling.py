import torch

from service.sampling import RowSampling, row_generator, sample_next, top_p_mask


def test_top_p_keeps_the_smallest_nucleus_and_always_the_top_token():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.9, 0.05, 0.03, 0.02]]))
    masked = top_p_mask(logits, torch.tensor([0.8, 0.5]))
    assert torch.isfinite(masked[0]).tolist() == [True, True, False, False]
    assert torch.isfinite(masked[1]).tolist() == [True, False, False, False]


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    rows = [RowSampling(0.0, 1.0, row_generator(i)) for i in range(2)]
    assert sample_next(logits, rows).tolist() == [1, 0]


def test_a_seeded_row_samples_the_same_whatever_shares_its_batch():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    alone = [sample_next(logits[2:3], [RowSampling(1.0, 0.9, row_generator(42))]).item()
             for _ in range(1)]
    mixed_rows = [RowSampling(1.0, 1.0, row_generator(s)) for s in (1, 2)]
    mixed_rows.insert(0, RowSampling(0.0, 1.0, row_generator(3)))
    mixed_rows.append(RowSampling(1.0, 0.9, row_generator(42)))
    batch = torch.stack([logits[0], logits[1], logits[3], logits[2]])
    assert sample_next(batch, mixed_rows)[3].item() == alone[0]


def test_sampling_follows_the_softmax_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    generator = row_generator(0)
    counts = torch.zeros(3)
    for _ in range(3000):
        counts[sample_next(logits, [RowSampling(1.0, 1.0, generator)]).item()] += 1
    frequencies = counts / counts.sum()
    assert torch.allclose(frequencies, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)
