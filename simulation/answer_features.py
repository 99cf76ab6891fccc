"""Base-model features of written answers, batched, exactly as serving records them.

Chat prompt + answer + EOS through the base model, pooled over the answer's tokens
(``contracts.features.sequence_features``): what the shared heads read. Used to
measure how well the written principles' prior judges held-out corpus answers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.progress import track

from contracts.features import sequence_features
from contracts.modeling import load_base_model


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
    for start in track(range(0, len(rows), batch_size), description="answer features"):
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
