"""Tailor: per-user LoRA personalization. Commands: up, learn, model, adapter, simulate, demo,
eval-reward, bench, check-faults.

Commands are thin: each parses options and calls one function elsewhere. Heavy
imports (torch, ray) happen inside the commands so ``tailor --help`` is quick.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from simulation.users import DEMO_USERS  # plain Python, no torch: --help stays quick

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.split("\n")[0])
model_app = typer.Typer(no_args_is_help=True, help="The base model.")
adapter_app = typer.Typer(no_args_is_help=True, help="Per-user LoRA adapters.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (ratios measured in one run).")
app.add_typer(model_app, name="model")
app.add_typer(adapter_app, name="adapter")
app.add_typer(bench_app, name="bench")
console = Console()


def _environment() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@app.command()
def up(
    learners: Annotated[bool, typer.Option(help="Also start the learner workers.")] = True,
) -> None:
    """Start the embedded default: redis-server, Ray, the Serve app (and learners)."""
    _environment()
    from commands.embedded import run_embedded

    run_embedded(with_learners=learners)


@app.command()
def learn(
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray).")
    ] = None,
) -> None:
    """Run the learner workers only, against REDIS_URL and the adapter store (separate cluster)."""
    _environment()
    from commands.learn import run_learners

    run_learners(ray_address)


@adapter_app.command("publish")
def adapter_publish(
    user: Annotated[str, typer.Option(help="User id the adapter is for.")],
    path: Annotated[Path, typer.Argument(help="A peft adapter folder (save_pretrained).")],
) -> None:
    """Publish a peft LoRA adapter as a user's current version (no restart needed).

    Refused, before anything is published, if the server could not serve it: a rank
    above TAILOR_MAX_LORA_RANK, modules outside TAILOR_LORA_TARGET_MODULES, DoRA, or
    per-layer ranks or alphas (rank_pattern, alpha_pattern).
    """
    _environment()
    import redis

    from contracts.adapter_store import (
        AdapterError,
        AdapterRegistry,
        AdapterStore,
        publish_adapter,
    )
    from contracts.lora_config import ServedLora
    from contracts.settings import Settings

    settings = Settings()
    client = redis.Redis.from_url(settings.effective_redis_url)
    try:
        version = publish_adapter(
            AdapterStore(settings.adapter_store_uri), AdapterRegistry(client), user, path,
            served=ServedLora.from_settings(settings),
        )
    except AdapterError as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from None
    except redis.ConnectionError:
        console.print(
            f"[red]error:[/] no Redis at {settings.effective_redis_url}: start `tailor up` "
            "or set REDIS_URL"
        )
        raise typer.Exit(2) from None
    console.print(f"published {user} -> {version}")


@app.command()
def demo(
    users: Annotated[
        str, typer.Option(help="Comma-separated simulation presets (or a count of the first ones).")
    ] = DEMO_USERS,
    max_events: Annotated[int, typer.Option(help="Judgments each user gives at most.")] = 60,
    invited_share: Annotated[float, typer.Option(
        help="Share of rated requests that invite a misbehaviour (judged harmless/honest; "
        "0.3 with a corpus v3 model, TAILOR_BASE_MODEL).")
    ] = 0.0,
    rater_reliability: Annotated[bool, typer.Option(
        help="Weight harmless/honest judgments by each rater's reliability (--no-...: the "
        "ablation, everyone at their word).")
    ] = True,
    compare: Annotated[bool, typer.Option(
        help="Rated requests ask for a comparison the server chooses by Thompson sampling "
        "of the user's reward (default: plain samples).")
    ] = False,
    measure_rounds: Annotated[
        int, typer.Option(help="Evaluation requests per user before and after learning.")
    ] = 10,
    seed: Annotated[int, typer.Option(help="Seed of prompts, judgments and sampling.")] = 0,
    session_judgments: Annotated[int, typer.Option(
        help="Judgments per session: then each user waits until the learners trained on "
        "them (0: all at once).")
    ] = 0,
    gold_check_every: Annotated[int, typer.Option(
        help="Every this many judgments one is a gold check (an answer whose verdict the "
        "server knows, GET /v1/users/{id}/gold-checks/next), within --max-events (0: none).")
    ] = 0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Where to write the JSON summary.")
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="Where to write the PNG of each user's curve.")
    ] = None,
) -> None:
    """`tailor up` + learners + simulated users in one command: before/after table, JSON, PNG."""
    _environment()
    from simulation.demo import DemoConfig, print_summary, run_demo

    try:
        config = DemoConfig(users=users, max_events=max_events, measure_rounds=measure_rounds,
                            seed=seed, invited_share=invited_share,
                            rater_reliability=rater_reliability,
                            session_judgments=session_judgments, compare=compare,
                            gold_check_every=gold_check_every)
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    print_summary(run_demo(config, json_path=json_path, png_path=png))


@bench_app.command("serve")
def bench_serve(
    users: Annotated[int, typer.Option(help="Distinct users (adapters) in the mixed batch.")] = 16,
    max_tokens: Annotated[int, typer.Option(help="Tokens generated per request.")] = 32,
    repeats: Annotated[int, typer.Option(help="Timed repetitions of each variant.")] = 3,
    arrivals: Annotated[int, typer.Option(
        help="Requests in the latency test, continuous vs whole batches (0: skip it).")] = 96,
    rounds: Annotated[int, typer.Option(
        help="Rounds of the latency test; each figure is their median.")] = 5,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the figures here.")] = None,
) -> None:
    """Tokens/s of base alone, mixed-adapter batches, one-at-a-time peft; latency of arrivals."""
    _environment()
    if min(users, max_tokens, repeats, rounds) < 1 or arrivals < 0:
        console.print(f"[red]error:[/] --users {users} --max-tokens {max_tokens} --repeats "
                      f"{repeats} --rounds {rounds} --arrivals {arrivals}: give positive numbers "
                      "(--arrivals 0 skips the latency test)")
        raise typer.Exit(2)
    from benchmarks.serve import run_bench_serve

    result = run_bench_serve(users=users, max_tokens=max_tokens, repeats=repeats,
                             console=console, arrivals=arrivals, rounds=rounds)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {json_path}")


@bench_app.command("scale")
def bench_scale(
    adapters: Annotated[str, typer.Option(
        help="Distinct users' adapters of each serving case, comma-separated.")] = "32,256,1024",
    requests: Annotated[int, typer.Option(
        help="Timed requests per serving case (after as many untimed).")] = 300,
    users: Annotated[str, typer.Option(
        help="Simulated users of each learning case, comma-separated.")] = "4,16,64",
    users_per_batch: Annotated[int, typer.Option(
        help="K of the learning cases, each run against K = 1.")] = 8,
    period_s: Annotated[float, typer.Option(
        help="Seconds between one simulated user's judgments.")] = 20.0,
    duration_s: Annotated[float, typer.Option(help="Seconds of each learning case.")] = 90.0,
    parts: Annotated[str, typer.Option(
        help="What to measure, comma-separated: serving, learning.")] = "serving,learning",
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the figures here.")] = None,
) -> None:
    """Many users: adapters over the slots and the host tier (hit rates, time to first
    token); feedback lag and users updated per minute as simulated users grow, K = 1 vs K."""
    _environment()
    chosen = {part.strip() for part in parts.split(",") if part.strip()}
    try:
        counts = [int(count) for count in adapters.split(",") if count.strip()]
        user_counts = [int(count) for count in users.split(",") if count.strip()]
    except ValueError:
        counts, user_counts = [], []
    if (not counts or min(counts) < 1 or requests < 1 or not user_counts or min(user_counts) < 1
            or users_per_batch < 1 or period_s <= 0 or duration_s <= 0
            or not chosen or chosen - {"serving", "learning"}):
        console.print(f"[red]error:[/] --adapters {adapters!r} --requests {requests} --users "
                      f"{users!r} --users-per-batch {users_per_batch} --period-s {period_s} "
                      f"--duration-s {duration_s} --parts {parts!r}: give positive numbers and "
                      "parts among serving, learning, e.g. --adapters 32,256,1024 --users 4,16,64")
        raise typer.Exit(2)
    result: dict = {}
    if "serving" in chosen:
        from benchmarks.scale_serving import figures, run_bench_scale_serving

        result |= figures(run_bench_scale_serving(counts, requests, console))
    if "learning" in chosen:
        from benchmarks.scale_learning import figures as learning_figures
        from benchmarks.scale_learning import run_bench_scale_learning
        from commands.redis_server import RedisServer, free_port

        with tempfile.TemporaryDirectory(prefix="tailor-bench-redis-") as folder:
            server = RedisServer(free_port(), Path(folder)).start()
            try:
                result |= learning_figures(run_bench_scale_learning(
                    server.url, user_counts, users_per_batch, period_s, duration_s, console))
            finally:
                server.stop()
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {json_path}")


@app.command("check-faults")
def check_faults(
    clients: Annotated[str, typer.Option(
        help="Concurrent clients of each sustained load, comma-separated.")] = "16,64",
    duration_s: Annotated[float, typer.Option(help="Seconds of each sustained load.")] = 120.0,
    fault_clients: Annotated[int, typer.Option(help="Clients during each fault.")] = 16,
    fault_duration_s: Annotated[float, typer.Option(
        help="Seconds of load around each fault.")] = 45.0,
    faults: Annotated[str, typer.Option(
        help="Faults to inject, comma-separated: burst, generator, redis, fuzz.")
    ] = "burst,generator,redis,fuzz",
    fuzz_examples: Annotated[int, typer.Option(help="Fuzzer examples per operation.")] = 25,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Write the figures here.")] = None,
    keep: Annotated[bool, typer.Option(help="Keep the logs and data of the run.")] = False,
) -> None:
    """Load (throughput, latency, memory) and faults (Redis, a replica, a burst, a fuzzer)."""
    _environment()
    from benchmarks.faults.suite import SuiteConfig
    from commands.check_faults import run_check_faults

    try:
        config = SuiteConfig(
            load_clients=tuple(int(c) for c in clients.split(",") if c.strip()),
            load_duration_s=duration_s, fault_clients=fault_clients,
            fault_duration_s=fault_duration_s,
            faults=tuple(f.strip() for f in faults.split(",") if f.strip()),
            fuzz_examples=fuzz_examples)
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    if not run_check_faults(config, console, json_path, keep):
        raise typer.Exit(1)


def _register_commands() -> None:
    """Commands whose options are defined beside the code they drive."""
    from benchmarks.learn_cli import bench_learn
    from evaluations.cli import eval_reward
    from simulation.cli import model_build, simulate

    app.command("simulate")(simulate)
    model_app.command("build")(model_build)
    app.command("eval-reward")(eval_reward)
    bench_app.command("learn")(bench_learn)


_register_commands()

def main() -> None:
    """The `tailor` command. An invalid TAILOR_ setting is a message naming the variable
    and the fix (exit 2), not a traceback from wherever the settings were first read."""
    from pydantic import ValidationError

    from contracts.settings import settings_problems

    try:
        app()
    except ValidationError as err:
        if err.title != "Settings":
            raise
        errors = Console(stderr=True)
        errors.print("[red]tailor: invalid settings[/red]")
        for line in settings_problems(err):
            errors.print(f"  {line}", markup=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
