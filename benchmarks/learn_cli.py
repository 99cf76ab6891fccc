"""`tailor bench learn`: the command's options; the work is in `benchmarks.learn`.

Registered by `commands.cli` as ``bench_app.command("learn")(bench_learn)``. RLlib is a
benchmark-only dependency: install it with ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer


def bench_learn(
    iterations: Annotated[int, typer.Option(help="Timed PPO updates per side (median).")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed PPO updates per side first.")] = 1,
    prompt_tokens: Annotated[int, typer.Option(help="Tokens per prompt.")] = 64,
    response_tokens: Annotated[
        int, typer.Option(help="Tokens per response (= RLlib episode length).")
    ] = 32,
    batch_size: Annotated[int, typer.Option(help="Prompts per PPO update (one user's batch).")] = 8,
    ppo_epochs: Annotated[int, typer.Option(help="Passes over the batch per update.")] = 4,
    num_minibatches: Annotated[int, typer.Option(help="Minibatches per pass.")] = 2,
    threads: Annotated[int, typer.Option(help="torch threads on each side.")] = 1,
    rllib_env_runners: Annotated[
        int, typer.Option(help="RLlib env-runner actors (0: sample in the driver).")
    ] = 0,
    users_per_batch: Annotated[
        int, typer.Option(help="K of the batched side: users trained in one PPO batch.")
    ] = 8,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the figures to this JSON file.")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="HF model folder (default: the built base model, else a random "
                          "Llama of its shape)."),
    ] = None,
) -> None:
    """PPO tokens/s and users updated/min: our learner vs RLlib's token-per-step PPO."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import ray.rllib  # noqa: F401  (benchmark-only dependency)
    except ImportError as error:
        raise typer.BadParameter(
            f"RLlib is not installed ({error}); run `pip install -e \".[bench]\"` first."
        ) from error
    from benchmarks.learn import BenchLearnConfig, default_model_spec, run_bench_learn
    from benchmarks.rllib_token_env import BenchModelSpec

    try:
        config = BenchLearnConfig(
            prompt_tokens=prompt_tokens,
            response_tokens=response_tokens,
            batch_size=batch_size,
            iterations=iterations,
            warmup=warmup,
            ppo_epochs=ppo_epochs,
            num_minibatches=num_minibatches,
            threads=threads,
            rllib_env_runners=rllib_env_runners,
            users_per_batch=users_per_batch,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    spec = BenchModelSpec(path=str(model)) if model is not None else default_model_spec()
    result = run_bench_learn(config, spec)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
