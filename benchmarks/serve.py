"""`tailor bench serve`: what mixed-adapter batching costs and what it saves.

Three ways to serve the same ``users`` requests (one per user, same prompt
length, ``max_tokens`` each, EOS ignored so every variant generates the same
number of tokens), timed side by side in one run on the same model:

  (a) base:   the base model alone, all requests in one batch (the ceiling);
  (b) mixed:  our engine, all requests in one batch, a different adapter per row;
  (c) naive:  one request at a time through peft, ``set_adapter`` per request.

It prints tokens/s of each and the ratios b/a (LoRA overhead; target >= 0.8)
and b/c (batching gain; target >= 4). Then, with ``arrivals`` > 0, the latency
of a stream of mixed-length requests under continuous vs whole-batch scheduling
(``bench_arrivals.py``) and the ratio of their mean latencies.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM

from benchmarks.arrivals import ArrivalStats, arrival_requests, median_stats, run_arrivals
from contracts.adapter_store import AdapterStore
from contracts.settings import Settings
from service.engine import Engine, EngineRequest
from service.engine_interface import SamplingParams

PROMPTS = [
    "how do I boil an egg", "my house is too hot", "name for my cat", "what should I cook tonight",
    "how do I fix a flat tire", "tips for sleeping better", "plan a weekend in the mountains",
    "how do I start running", "what is a good houseplant", "help me write a thank you note",
    "how do I save money on groceries", "ideas for a rainy day", "how do I clean a cast iron pan",
    "what book should I read next", "how do I learn to juggle", "gift ideas for my dad",
]


def make_random_adapter(
    base_dir: Path, out: Path, seed: int, targets: list[str], rank: int, alpha: float,
    scale: float = 0.05,
) -> Path:
    """A peft LoRA adapter with random A and B (peft starts B at zero), in peft format."""
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(out)
    return out


def _timed(fn, repeats: int) -> tuple[float, int]:
    fn()  # warm-up
    times, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def run_bench_serve(users: int, max_tokens: int, repeats: int, console: Console,
                    arrivals: int = 96, rounds: int = 5) -> dict[str, float]:
    torch.set_num_threads(1)
    settings = Settings()
    workdir = Path(tempfile.mkdtemp(prefix="tailor-bench-"))
    store_uri = str(workdir / "store")
    settings = settings.model_copy(update={"adapter_store": store_uri, "max_batch_size": users,
                                           "adapter_cache_size": max(users, settings.adapter_cache_size)})
    base_dir = settings.base_model_path
    store = AdapterStore(store_uri)
    adapter_dirs = []
    with console.status(f"making {users} random adapters ..."):
        for i in range(users):
            path = make_random_adapter(base_dir, workdir / f"a{i}", i, settings.lora_target_modules,
                                       settings.lora_rank, settings.lora_alpha)
            store.put(f"user{i}", "v1", path)
            adapter_dirs.append(path)

    engine = Engine(settings)
    engine.start()
    prompts = [engine.encode_chat([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}])
               for i in range(users)]
    width = min(len(p) for p in prompts)
    prompts = [p[-width:] for p in prompts]  # equal lengths: no variant pays for padding
    # ignore_eos: every variant generates exactly max_tokens per request
    params = SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=0, ignore_eos=True)

    def run_engine(with_adapters: bool) -> int:
        requests = [
            EngineRequest(prompt, params, user_id=f"user{i}",
                              adapter_version="v1" if with_adapters else None, record_features=False)
            for i, prompt in enumerate(prompts)
        ]
        results = engine.generate_batch(requests)
        return sum(r.completion_tokens for r in results)

    with console.status("timing (a) base, one batch ..."):
        t_base, n_base = _timed(lambda: run_engine(False), repeats)
    with console.status("timing (b) mixed adapters, one batch ..."):
        t_mixed, n_mixed = _timed(lambda: run_engine(True), repeats)

    # (c) the naive way: one PeftModel holding every adapter, one request at a time.
    base_model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    peft_model = PeftModel.from_pretrained(base_model, adapter_dirs[0], adapter_name="user0")
    for i, path in enumerate(adapter_dirs[1:], start=1):
        peft_model.load_adapter(path, adapter_name=f"user{i}")
    peft_model.eval()

    def run_naive() -> int:
        tokens = 0
        for i, prompt in enumerate(prompts):
            peft_model.set_adapter(f"user{i}")
            ids = torch.tensor([prompt])
            out = peft_model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                temperature=1.0, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
            tokens += out.shape[1] - ids.shape[1]
        return tokens

    with console.status("timing (c) naive, one request at a time ..."):
        t_naive, n_naive = _timed(run_naive, repeats)

    rates = {"base": n_base / t_base, "mixed": n_mixed / t_mixed, "naive": n_naive / t_naive}
    table = Table(title=f"serving throughput, {users} users x {max_tokens} tokens "
                        f"(median of {repeats}, torch threads=1, {engine.base.device})")
    table.add_column("variant")
    table.add_column("tokens", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("tokens/s", justify="right")
    for name, t, n in (("(a) base model alone, batched", t_base, n_base),
                       ("(b) mixed adapters, batched", t_mixed, n_mixed),
                       ("(c) naive peft, one at a time", t_naive, n_naive)):
        table.add_row(name, str(n), f"{t:.3f}", f"{n / t:.1f}")
    console.print(table)
    ratios = {"b_over_a": rates["mixed"] / rates["base"], "b_over_c": rates["mixed"] / rates["naive"]}
    console.print(f"b/a = {ratios['b_over_a']:.2f} (target >= 0.8)   "
                  f"b/c = {ratios['b_over_c']:.2f} (target >= 4)")
    if arrivals:
        apart = Engine(settings.model_copy(update={"chunked_prefill": False}))
        apart.start()
        ratios |= bench_arrivals({True: engine, False: apart}, prompts, arrivals, users,
                                 step_s=t_mixed / max_tokens, rounds=rounds, console=console)
    return {**rates, **ratios}


def bench_arrivals(engines: dict[bool, Engine], prompts: list[list[int]], count: int,
                   max_batch_size: int, step_s: float, rounds: int,
                   console: Console) -> dict[str, float]:
    """Latency of ``count`` arrivals under three schedules, same arrivals, ``rounds`` times.

    ``engines`` by ``chunked_prefill``. The schedules take turns round by round and
    each cell is the median over the rounds: one round's means move by a fifth from
    one run to the next on this machine (which requests share a batch shifts with
    a millisecond's jitter), the same in every schedule.
    """
    short, long = 8, 64
    gap_s = 3 * step_s  # about a third of a full batch's decode speed: a busy, not flooded, server
    schedules = {  # label -> (chunked prefill, continuous)
        "continuous, fused": (True, True),
        "continuous, apart": (False, True),
        "whole batches": (True, False),
    }
    runs: dict[str, list[ArrivalStats]] = {label: [] for label in schedules}
    for round_ in range(rounds):
        for label, (chunked, continuous) in schedules.items():
            requests = arrival_requests(prompts, count, short, long, long_share=0.25)
            with console.status(f"arrivals: {count} requests every {gap_s * 1000:.1f} ms, "
                                f"{label}, round {round_ + 1} of {rounds} ..."):
                runs[label].append(run_arrivals(engines[chunked], requests, gap_s,
                                                max_batch_size, continuous))
    stats = {label: median_stats(values) for label, values in runs.items()}
    table = Table(title=f"latency of {count} streamed arrivals, one every {gap_s * 1000:.1f} ms "
                        f"(~75% {short} tokens, ~25% {long}; a different adapter each; "
                        f"median of {rounds} rounds)")
    columns = ("scheduling", "mean s", "p95 s", f"mean s, {short} tok", f"mean s, {long} tok",
               "first text s", "tokens/s")
    for column in columns:
        table.add_column(column, justify="left" if column == "scheduling" else "right")
    for label, st in stats.items():
        table.add_row(label, f"{st.mean_s:.3f}", f"{st.p95_s:.3f}",
                      f"{st.mean_by_length_s[short]:.3f}", f"{st.mean_by_length_s[long]:.3f}",
                      f"{st.ttft_mean_s:.3f}", f"{st.tokens_per_s:.1f}")
    console.print(table)
    fused, apart, whole = stats.values()
    ratios = {
        "latency_static_over_continuous": whole.mean_s / fused.mean_s,
        "ttft_static_over_continuous": whole.ttft_mean_s / fused.ttft_mean_s,
        "long_latency_static_over_continuous":
            whole.mean_by_length_s[long] / fused.mean_by_length_s[long],
        "long_latency_static_over_prefill_apart":
            whole.mean_by_length_s[long] / apart.mean_by_length_s[long],
        "short_latency_static_over_continuous":
            whole.mean_by_length_s[short] / fused.mean_by_length_s[short],
    }
    console.print(
        "whole batches / continuous with fused prefill: mean latency "
        f"{ratios['latency_static_over_continuous']:.2f}, first text "
        f"{ratios['ttft_static_over_continuous']:.2f}, {short}-token requests "
        f"{ratios['short_latency_static_over_continuous']:.2f}, {long}-token requests "
        f"{ratios['long_latency_static_over_continuous']:.2f} (with the prefill apart: "
        f"{ratios['long_latency_static_over_prefill_apart']:.2f}; below 1: continuous is "
        "slower for them)"
    )
    return ratios
