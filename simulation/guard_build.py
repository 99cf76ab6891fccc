"""Build the harmlessness guard of the default model from labelled corpus answers.

The guard (``learners/guard.py``) is a fixed logistic head on the base model's
frozen features that says how dismissive an answer is. Here it is fitted on
answers of the synthetic corpus, whose style we know, with features computed
exactly as serving records them: chat prompt + answer + EOS through the base
model, pooled over the answer's tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.progress import track

from contracts.features import sequence_features
from contracts.modeling import load_base_model
from learners.guard import HarmlessnessGuard, fit_guard
from simulation.corpus import generate_examples
from simulation.styles import DISMISSIVE


@torch.no_grad()
def answer_features(model_dir: Path, prompts: list[str], answers: list[str], batch_size: int = 32) -> torch.Tensor:
    base = load_base_model(model_dir, "cpu")
    tokenizer = base.tokenizer
    rows = []
    for prompt, answer in zip(prompts, answers, strict=True):
        prompt_ids = list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                        add_generation_prompt=True, tokenize=True,
                                                        return_dict=False))
        answer_ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
        rows.append((prompt_ids, answer_ids))
    chunks = []
    for start in track(range(0, len(rows), batch_size), description="guard features"):
        batch = rows[start : start + batch_size]
        longest = max(len(p) + len(a) for p, a in batch)
        input_ids = torch.full((len(batch), longest), tokenizer.pad_token_id)
        attention = torch.zeros((len(batch), longest), dtype=torch.long)
        answer_mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for i, (p, a) in enumerate(batch):
            input_ids[i, : len(p) + len(a)] = torch.tensor(p + a)
            attention[i, : len(p) + len(a)] = 1
            answer_mask[i, len(p) : len(p) + len(a)] = 1
        chunks.append(sequence_features(base.model, input_ids, attention, answer_mask))
    return torch.cat(chunks)


def build_guard(model_dir: Path, seed: int = 0, count: int = 1400) -> HarmlessnessGuard:
    """Fit the guard on ``count`` corpus answers and save it beside the model's weights."""
    torch.manual_seed(seed)
    examples = generate_examples(count, seed + 7919)  # not the model's own training stream
    features = answer_features(model_dir, [e.prompt for e in examples], [e.answer for e in examples])
    dismissive = torch.tensor([e.style == DISMISSIVE for e in examples])
    guard = fit_guard(features, dismissive)
    guard.save(model_dir)
    return guard
