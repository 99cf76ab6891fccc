"""`tailor bench learn`: PPO throughput of our learner vs RLlib's PPO, side by side in one run.

Both sides train the same LoRA (same base model, rank, targets, learning rate) on
the same batch: ``batch_size`` prompts of ``prompt_tokens`` random tokens, one
``response_tokens``-token response each, the same reward (`even_token_share` of
the response), γ = 1, GAE λ, ``ppo_epochs`` × ``num_minibatches`` clipped-PPO steps.

  ours:  `learners.ppo.ppo_update` — KV-cached `generate`, then the batch's
         log-probs, reference log-probs and values in one forward each; and
         `ppo_update_batch` with K users' LoRAs in one batch (each user the same
         rollouts as alone), users updated per minute against K = 1.
  RLlib: RLlib's PPO (new API stack, torch) on `benchmarks.rllib_token_env` — one
         environment step per token, the full context through the model at every
         step (no KV cache), weights synced learner → env runner after each update
         (DESIGN.md decision 7).

Every response is exactly ``response_tokens`` long on both sides (EOS is an
ordinary token: ours gets an EOS id the model cannot emit), so both do the same
work per user. Our side also computes the reference model's log-probs and the
KL penalty, which the RLlib side skips: the ratio is, if anything, in RLlib's favour.

Throughput is response tokens (PPO actions, RLlib env steps) per second, and users
updated per minute = 60 / seconds per update (one update = one user's batch),
from the median over ``iterations`` timed updates after ``warmup`` untimed ones.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from peft import get_peft_model
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from transformers.utils import logging as transformers_logging

from benchmarks.rllib_token_env import (
    BenchModelSpec,
    TokenEnv,
    TokenPolicyRLModule,
    even_token_share,
    load_base_model,
)
from contracts.settings import Settings
from learners.ppo import PPOMember, make_optimizer, ppo_update_batch
from learners.ppo_config import PPOConfig
from learners.value_head import ValueHead


@dataclass(frozen=True)
class BenchLearnConfig:
    """What `run_bench_learn` measures; the same settings drive both sides."""

    prompt_tokens: int = 64  # tokens per prompt (random ids)
    response_tokens: int = 32  # tokens per response = RLlib episode length
    batch_size: int = 8  # prompts (responses, RLlib episodes) per PPO update = one user's batch
    iterations: int = 3  # timed PPO updates per side (after the warm-up)
    warmup: int = 1  # untimed PPO updates per side first (lazy init, allocator warm-up)
    ppo_epochs: int = 4  # passes over the batch per update
    num_minibatches: int = 2  # minibatches per pass
    threads: int = 1  # torch threads on each side (and in RLlib's env runner)
    rllib_env_runners: int = 0  # RLlib env-runner actors; 0 samples in the driver process
    users_per_batch: int = 8  # K of the batched side: users trained together (1: no such side)
    seed: int = 0  # prompts and sampling

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "response_tokens", "batch_size", "iterations",
                     "ppo_epochs", "num_minibatches", "threads", "users_per_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BenchLearnConfig.{name}={value!r}: must be an integer >= 1.")
        for name in ("warmup", "rllib_env_runners"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"BenchLearnConfig.{name}={value!r}: must be an integer >= 0.")
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"BenchLearnConfig.batch_size={self.batch_size} is not a multiple of "
                f"num_minibatches={self.num_minibatches}: RLlib's minibatches are counted in "
                "steps, so give a batch size that splits evenly."
            )

    def ppo_config(self) -> PPOConfig:
        """Our PPO settings; the RLlib side copies its LoRA and optimisation fields."""
        return PPOConfig(
            max_prompt_tokens=self.prompt_tokens,
            max_new_tokens=self.response_tokens,
            ppo_epochs=self.ppo_epochs,
            num_minibatches=self.num_minibatches,
            missing_eos_penalty=0.0,  # no response ends with EOS here (see the module docstring)
        )


def default_model_spec() -> BenchModelSpec:
    """The serving base model if it has been built, else a random Llama of its shape."""
    path = Settings().base_model_path
    if (path / "config.json").is_file():
        return BenchModelSpec(path=str(path))
    return BenchModelSpec()


def benchmark_prompts(
    config: BenchLearnConfig, vocab_size: int, special_ids: set[int]
) -> list[list[int]]:
    """``batch_size`` prompts of ``prompt_tokens`` random ids, none of them pad, EOS or BOS."""
    allowed = torch.tensor([i for i in range(vocab_size) if i not in special_ids])
    generator = torch.Generator().manual_seed(config.seed)
    picks = torch.randint(len(allowed), (config.batch_size, config.prompt_tokens),
                          generator=generator)
    return allowed[picks].tolist()


@dataclass
class SideResult:
    """Median timing of one side's PPO updates."""

    seconds_per_update: float  # median wall time of one PPO update (``users`` users' batches)
    response_tokens_per_update: float  # PPO actions (RLlib env steps) per update
    users: int = 1  # users updated by one update
    state_bytes_per_user: int = 0  # a batched user's LoRA, critic and their Adam moments
    peak_bytes: int | None = None  # CUDA only: the update's peak allocated memory

    @property
    def tokens_per_s(self) -> float:
        return self.response_tokens_per_update / self.seconds_per_update

    @property
    def users_per_min(self) -> float:
        return 60.0 * self.users / self.seconds_per_update


class _TokenIds:
    """The ids `ppo_update` reads from a tokenizer. EOS is an id past the vocabulary, so no
    response stops early: every response is ``response_tokens`` long, as RLlib's episodes."""

    def __init__(self, vocab_size: int, pad_token_id: int | None) -> None:
        self.pad_token_id = pad_token_id if pad_token_id is not None else 0
        self.eos_token_id = vocab_size


def _even_share_reward(
    prompt_ids: list[list[int]], response_ids: list[list[int]], features: torch.Tensor
) -> torch.Tensor:
    return torch.tensor([even_token_share(response) for response in response_ids])


def run_ours(
    config: BenchLearnConfig, spec: BenchModelSpec, progress: Progress | None = None,
    users: int = 1,
) -> SideResult:
    """Time PPO iterations over ``warmup + iterations`` updates: of one user's LoRA
    (`ppo_update`), or with ``users`` > 1 of that many users' LoRAs in one batch
    (`ppo_update_batch`, each user ``batch_size`` rollouts, as alone)."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    ppo_config = config.ppo_config()
    policy = get_peft_model(load_base_model(spec), ppo_config.lora_config())
    slots = ["default"] + [f"user{i}" for i in range(1, users)]
    for slot in slots[1:]:
        policy.add_adapter(slot, ppo_config.lora_config())
    policy.base_model.set_requires_grad(slots, True)
    vocab_size = policy.config.vocab_size
    prompts = benchmark_prompts(config, vocab_size, spec.special_token_ids())
    ids = _TokenIds(vocab_size, policy.config.pad_token_id)
    members = []
    for slot in slots:
        value_head = ValueHead.for_model(policy)
        members.append(PPOMember(prompts, _even_share_reward, value_head,
                                 make_optimizer(policy, value_head, ppo_config, adapter=slot),
                                 adapter=slot if users > 1 else None))
    label = "ours: PPO updates" if users == 1 else f"ours: PPO updates, {users} users per batch"
    task = progress.add_task(label, total=config.warmup + config.iterations) if progress else None
    cuda = torch.cuda.is_available() and next(policy.parameters()).is_cuda
    seconds, tokens, peaks = [], [], []
    for index in range(config.warmup + config.iterations):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        outcomes = ppo_update_batch(policy, ids, members, ppo_config)
        failed = [o for o in outcomes if isinstance(o, Exception)]
        if failed:
            raise failed[0]
        if index >= config.warmup:
            seconds.append(outcomes[0].seconds)
            tokens.append(sum(o.response_tokens for o in outcomes))
            if cuda:
                peaks.append(torch.cuda.max_memory_allocated())
        if progress is not None:
            progress.advance(task)
    return SideResult(statistics.median(seconds), statistics.mean(tokens), users,
                      _state_bytes(policy, members[0]), max(peaks) if peaks else None)


def _state_bytes(policy, member: PPOMember) -> int:
    """Bytes one user holds while trained: LoRA and critic weights, and Adam's two moments."""
    weights = [p for group in member.optimizer.param_groups for p in group["params"]]
    return 3 * sum(p.numel() * p.element_size() for p in weights)


def _rllib_algorithm_config(config: BenchLearnConfig, spec: BenchModelSpec, vocab_size: int):
    from ray.rllib.algorithms.ppo import PPOConfig as RLlibPPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    ours = config.ppo_config()
    steps_per_update = config.batch_size * config.response_tokens
    return (
        RLlibPPOConfig()
        .environment(
            env=TokenEnv,
            env_config={
                "prompts": benchmark_prompts(config, vocab_size, spec.special_token_ids()),
                "response_tokens": config.response_tokens,
                "vocab_size": vocab_size,
            },
        )
        .framework("torch")
        .env_runners(
            num_env_runners=config.rllib_env_runners,
            num_envs_per_env_runner=config.batch_size,  # one batched forward per step
            num_cpus_per_env_runner=0.5,
            batch_mode="complete_episodes",
            rollout_fragment_length=config.response_tokens,
        )
        .learners(num_learners=0)  # learn in the driver, like ours
        .training(
            train_batch_size_per_learner=steps_per_update,
            minibatch_size=steps_per_update // config.num_minibatches,
            num_epochs=config.ppo_epochs,
            lr=ours.learning_rate,
            gamma=1.0,
            lambda_=ours.gae_lambda,
            clip_param=ours.clip_range,
            vf_clip_param=ours.clip_range_value,
            vf_loss_coeff=ours.vf_coef,
            entropy_coeff=ours.ent_coef,
            grad_clip=ours.max_grad_norm,
            grad_clip_by="global_norm",
            use_kl_loss=False,  # ours has no KL-to-old-policy loss either
        )
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=TokenPolicyRLModule,
                model_config={
                    "model": spec.as_dict(),
                    "lora_rank": ours.lora_rank,
                    "lora_alpha": ours.lora_alpha,
                    "lora_target_modules": list(ours.lora_target_modules),
                    "threads": config.threads,
                },
            )
        )
        .debugging(seed=config.seed, log_level="ERROR")
    )


def run_rllib(
    config: BenchLearnConfig, spec: BenchModelSpec, vocab_size: int,
    progress: Progress | None = None,
) -> tuple[SideResult, float]:
    """Time RLlib's `algo.train()` (sample + update + weight sync) over ``warmup + iterations``
    iterations; also return the mean episode length it reported (= ``response_tokens``)."""
    import ray
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_LEN_MEAN,
        NUM_ENV_STEPS_SAMPLED,
    )

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    torch.set_num_threads(config.threads)
    started_ray = not ray.is_initialized()
    temp_dir = tempfile.mkdtemp(prefix="tailor-ray-")
    if started_ray:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir,
                 object_store_memory=256 * 1024**2, logging_level=logging.ERROR,
                 log_to_driver=False)
    logging.getLogger("ray.rllib").setLevel(logging.ERROR)
    algo = None
    try:
        algo = _rllib_algorithm_config(config, spec, vocab_size).build_algo()
        task = progress.add_task("RLlib: PPO iterations", total=config.warmup + config.iterations) \
            if progress else None
        seconds, steps, episode_lengths = [], [], []
        for index in range(config.warmup + config.iterations):
            started = time.perf_counter()
            result = algo.train()
            elapsed = time.perf_counter() - started
            if index >= config.warmup:
                seconds.append(elapsed)
                steps.append(result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED])
                episode_lengths.append(result[ENV_RUNNER_RESULTS][EPISODE_LEN_MEAN])
            if progress is not None:
                progress.advance(task)
        side = SideResult(statistics.median(seconds), statistics.mean(steps))
        return side, float(statistics.mean(episode_lengths))
    finally:
        if algo is not None:
            algo.stop()
        if started_ray:
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_bench_learn(
    config: BenchLearnConfig | None = None,
    spec: BenchModelSpec | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run both sides, print the table and the ratio, and return the numbers.

    ``spec`` defaults to `default_model_spec()` (the built base model, else a random Llama
    of its shape). Keys of the result: ``users_per_minute`` and ``tokens_per_s`` by K
    (``"1"`` and ``str(users_per_batch)``), ``users_per_batch_gain`` (users/min at K over
    K = 1), ``state_bytes_per_batched_user``, ``peak_bytes`` by K (CUDA only), ``model``,
    ``ours_*`` (K = 1) and ``rllib_*`` with ``tokens_per_s``, ``users_per_min``,
    ``seconds_per_update``; ``ratio`` (ours / RLlib tokens/s), ``rllib_episode_len_mean``,
    ``load_avg_1m`` (before, after).
    """
    config = config or BenchLearnConfig()
    spec = spec or default_model_spec()
    console = console or Console()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers_logging.disable_progress_bar()  # one "Loading weights" bar per model copy
    vocab_size = spec.model_config().vocab_size
    load_before = os.getloadavg()[0]
    console.print(
        f"model: {spec.describe()}\n"
        f"batch: {config.batch_size} × ({config.prompt_tokens} prompt + "
        f"{config.response_tokens} response) tokens per update, {config.ppo_epochs} epochs × "
        f"{config.num_minibatches} minibatches; {config.threads} torch thread(s) per side; "
        f"RLlib env runners: {config.rllib_env_runners}; median of {config.iterations} after "
        f"{config.warmup} warm-up"
    )
    k = config.users_per_batch
    with Progress(console=console, transient=True) as progress:
        ours = run_ours(config, spec, progress)
        batched = run_ours(config, spec, progress, users=k) if k > 1 else ours
        rllib, episode_len_mean = run_rllib(config, spec, vocab_size, progress)
    load_after = os.getloadavg()[0]
    ratio = ours.tokens_per_s / rllib.tokens_per_s
    batch_gain = batched.users_per_min / ours.users_per_min

    table = Table(title="PPO throughput on one user's LoRA (response tokens = PPO actions)")
    table.add_column("variant")
    table.add_column("tokens/s", justify="right")
    table.add_column("users updated/min", justify="right")
    table.add_column("s/update", justify="right")
    rows = [("tailor PPO, K = 1 (KV-cached generate, batched)", ours),
            ("RLlib PPO (token per env step, no KV cache)", rllib)]
    if k > 1:
        rows.insert(1, (f"tailor PPO, K = {k} users in one batch", batched))
    for name, side in rows:
        table.add_row(name, f"{side.tokens_per_s:.0f}", f"{side.users_per_min:.1f}",
                      f"{side.seconds_per_update:.2f}")
    console.print(table)
    peak = (f", peak {batched.peak_bytes / 2**20:.0f} MiB at K = {k} against "
            f"{ours.peak_bytes / 2**20:.0f} MiB at K = 1" if batched.peak_bytes else "")
    console.print(
        f"ratio ours / RLlib: [bold]{ratio:.1f}×[/bold] (target ≥ 10×); users/min K = {k} / "
        f"K = 1: [bold]{batch_gain:.2f}×[/bold] (target ≥ 4× on a GPU); state per batched user "
        f"{batched.state_bytes_per_user / 1024:.0f} KiB{peak}; load average (1 min) "
        f"{load_before:.2f} before, {load_after:.2f} after, {os.cpu_count()} CPUs"
    )
    return {
        "users_per_minute": {"1": ours.users_per_min, str(k): batched.users_per_min},
        "tokens_per_s": {"1": ours.tokens_per_s, str(k): batched.tokens_per_s},
        "users_per_batch_gain": batch_gain,
        "state_bytes_per_batched_user": batched.state_bytes_per_user,
        "peak_bytes": {"1": ours.peak_bytes, str(k): batched.peak_bytes},
        "model": spec.describe(),
        "ours_tokens_per_s": ours.tokens_per_s,
        "ours_users_per_min": ours.users_per_min,
        "ours_seconds_per_update": ours.seconds_per_update,
        "rllib_tokens_per_s": rllib.tokens_per_s,
        "rllib_users_per_min": rllib.users_per_min,
        "rllib_seconds_per_update": rllib.seconds_per_update,
        "rllib_episode_len_mean": episode_len_mean,
        "ratio": ratio,
        "load_avg_1m": (load_before, load_after),
    }
