"""PPO on a given device and dtype: the checks of test_ppo.py that depend on the model's numbers.

    python -m tests.ppo_device_check --device cuda     # bf16 on a GPU
    python -m tests.ppo_device_check --device cpu      # fp32 (what the pytest suite covers)
    python -m tests.ppo_device_check --device cpu --dtype bfloat16   # the GPU's dtype, on CPU

Not a pytest module: CI has no GPU. Run it where one is lent; it exits 1 on a failed check.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
from peft import get_peft_model

from learners.ppo import make_optimizer, ppo_update
from learners.ppo_config import PPOConfig
from learners.rollout import sample_responses
from learners.value_head import ValueHead
from tests.builders import EOS_ID, PAD_ID, tiny_llama, tiny_tokenizer

TARGET_TOKEN = 19


def make_policy(config: PPOConfig, device: str, dtype: torch.dtype, seed: int = 0):
    return get_peft_model(tiny_llama(seed).to(device=device, dtype=dtype), config.lora_config())


def check_update_touches_only_trainables(device: str, dtype: torch.dtype) -> list[str]:
    config = PPOConfig(max_new_tokens=6, ppo_epochs=2, num_minibatches=2, learning_rate=1e-3)
    policy = make_policy(config, device, dtype)
    value_head = ValueHead.for_model(policy)
    named = {**dict(policy.named_parameters()),
             **{f"value_head.{k}": v for k, v in value_head.named_parameters()}}
    before = {name: p.detach().clone() for name, p in named.items()}
    trainable = {name for name, p in named.items() if p.requires_grad}
    torch.manual_seed(0)
    prompts = torch.randint(2, 100, (8, 5)).tolist()
    stats = ppo_update(
        policy, value_head, make_optimizer(policy, value_head, config), tiny_tokenizer(), prompts,
        lambda p, r, f: torch.tensor([sum(t % 2 == 0 for t in x) / max(len(x), 1) for x in r]),
        config,
    )
    failures = [f"trainable unchanged: {n}" for n in trainable if torch.equal(named[n], before[n])]
    failures += [f"frozen changed: {n}" for n in named
                 if n not in trainable and not torch.equal(named[n], before[n])]
    failures += [f"stat not finite: {k}" for k, v in vars(stats).items()
                 if isinstance(v, float) and not math.isfinite(v)]
    lora_dtypes = {str(named[n].dtype) for n in trainable}
    print(f"update: {len(trainable)} trainable tensors ({', '.join(sorted(lora_dtypes))}), "
          f"base dtype {dtype}, {stats.seconds * 1000:.0f} ms, {stats}")
    return failures


def target_frequency(policy, prompts: list[list[int]]) -> float:
    torch.manual_seed(123)
    rollout = sample_responses(policy, prompts * 4, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                               max_new_tokens=8)
    tokens = rollout.response_ids[rollout.response_mask.bool()]
    return (tokens == TARGET_TOKEN).float().mean().item()


def check_learning(device: str, dtype: torch.dtype) -> list[str]:
    config = PPOConfig(max_new_tokens=8, learning_rate=1e-2, kl_coef=0.0, missing_eos_penalty=0.0)
    policy = make_policy(config, device, dtype)
    value_head = ValueHead.for_model(policy)
    optimizer = make_optimizer(policy, value_head, config)
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 100, (6,), generator=generator).tolist() for _ in range(16)]
    before = target_frequency(policy, prompts)
    def reward_fn(prompt_ids, response_ids, features):
        return torch.tensor([r.count(TARGET_TOKEN) / max(len(r), 1) for r in response_ids])

    torch.manual_seed(0)
    for _ in range(10):
        ppo_update(policy, value_head, optimizer, tiny_tokenizer(), prompts, reward_fn, config)
    after = target_frequency(policy, prompts)
    print(f"learning: rewarded token frequency {before:.3f} -> {after:.3f}")
    return [] if after >= before + 0.10 else [f"learning too weak: {before:.3f} -> {after:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    default = "bfloat16" if args.device.startswith("cuda") else "float32"
    dtype = getattr(torch, args.dtype or default)
    failures = check_update_touches_only_trainables(args.device, dtype)
    failures += check_learning(args.device, dtype)
    for failure in failures:
        print("FAIL", failure)
    print("OK" if not failures else f"{len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
