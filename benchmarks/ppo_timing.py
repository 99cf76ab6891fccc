"""Time `ppo_update` on a random Llama of a given shape (no downloads, no Ray, no Redis).

    python -m benchmarks.ppo_timing                       # test-sized model: hidden 32, 2 layers
    python -m benchmarks.ppo_timing --hidden 160 --layers 4 --vocab 2048   # embedded-default shape
    python -m benchmarks.ppo_timing --device cuda         # bf16 on a GPU

Prompts are random tokens of exactly ``--prompt-tokens``; responses run up to
``--response-tokens`` (a random model seldom emits EOS, so close to the limit).
The reward is a cheap function of the response tokens, so the time is PPO's own.
Prints the median over ``--updates`` timed updates after one warm-up update.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from peft import get_peft_model
from transformers import LlamaForCausalLM

from contracts.modeling import small_llama_config
from learners.ppo import make_optimizer, ppo_update
from learners.ppo_config import PPOConfig
from learners.value_head import ValueHead

PAD_ID, EOS_ID = 0, 1


class _Ids:
    """The two ids `ppo_update` reads from a tokenizer."""

    pad_token_id = PAD_ID
    eos_token_id = EOS_ID


def random_llama(hidden: int, layers: int, vocab: int, device: str, dtype: torch.dtype):
    config = small_llama_config(vocab, hidden, layers, intermediate_ratio=2.8, num_kv_heads=4,
                                pad_token_id=PAD_ID, eos_token_id=EOS_ID)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--response-tokens", type=int, default=32)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (bf16)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    config = PPOConfig(max_prompt_tokens=args.prompt_tokens, max_new_tokens=args.response_tokens)
    policy = get_peft_model(random_llama(args.hidden, args.layers, args.vocab, args.device, dtype),
                            config.lora_config())
    value_head = ValueHead.for_model(policy)
    optimizer = make_optimizer(policy, value_head, config)
    prompts = torch.randint(2, args.vocab, (args.batch, args.prompt_tokens)).tolist()

    def reward_fn(prompt_ids, response_ids, features):
        return torch.tensor([sum(t % 2 for t in r) / max(len(r), 1) for r in response_ids])

    ppo_update(policy, value_head, optimizer, _Ids(), prompts, reward_fn, config)  # warm-up
    runs = [ppo_update(policy, value_head, optimizer, _Ids(), prompts, reward_fn, config)
            for _ in range(args.updates)]
    seconds = statistics.median(run.seconds for run in runs)
    response_tokens = statistics.mean(run.response_tokens for run in runs)
    tokens = statistics.mean(run.tokens for run in runs)
    params_m = sum(p.numel() for p in policy.parameters()) / 1e6
    print(
        f"model hidden={args.hidden} layers={args.layers} vocab={args.vocab} "
        f"({params_m:.2f} M params) on {args.device} {dtype}, "
        f"{args.threads} thread(s)\n"
        f"batch {args.batch} x ({args.prompt_tokens} prompt + <= {args.response_tokens} response)"
        " tokens, "
        f"{config.ppo_epochs} epochs x {config.num_minibatches} minibatches\n"
        f"per update: {seconds * 1000:.0f} ms median of {args.updates}  "
        f"| {response_tokens / seconds:.0f} response tokens/s  | {tokens / seconds:.0f} tokens/s  "
        f"| mean response {response_tokens / args.batch:.1f} tokens"
    )


if __name__ == "__main__":
    main()
