"""`tailor eval-reward`: the reward models on real people's votes (issue 5).

A plain typer-annotated function; `commands/cli.py` registers it on the `tailor` app.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

# The evaluation's modules import torch and the encoders: they load inside the
# command, so that `tailor --help` stays quick.


def eval_reward(
    data: Annotated[Path, typer.Option("--data", help="Folder of Polis conversations "
                                       "(one sub-folder each with comments.csv and participants-votes.csv).")],
    encoder: Annotated[str, typer.Option(help="Text encoder: base or minilm "
                                         "(base = the base LLM's hidden state).")] = "minilm",
    seed: Annotated[int, typer.Option(help="Seed of every split and model.")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="Write the cold-start curve here (PNG).")] = None,
    base_model: Annotated[Path | None, typer.Option(help="Model folder for --encoder base "
                                                    "(default: TAILOR_BASE_MODEL or the built-in model).")] = None,
    protocol: Annotated[list[str] | None, typer.Option(help="Run only these protocols (seen_texts, new_texts); "
                                                       "repeatable. Default: both.")] = None,
    holdout_fraction: Annotated[float, typer.Option(help="Share held out per user (seen texts) "
                                                    "or of statements (new texts).")] = 0.25,
    min_votes: Annotated[int, typer.Option(help="Non-pass votes a user needs to be evaluated.")] = 20,
    rater_reliability: Annotated[bool, typer.Option(
        help="Weigh each voter in the population reward by their agreement with everyone "
             "else, as the learners do (--no-rater-reliability: every voter weighs one).")] = True,
) -> None:
    """Evaluate always-agree, the population reward model and the per-user reward models on Polis votes."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from evaluations.encoders import ENCODER_NAMES, load_encoder
    from evaluations.polis import load_polis
    from evaluations.reward_eval import (
        PROTOCOLS,
        EvalConfig,
        evaluate,
        plot_cold_start,
        render_tables,
        write_json,
    )

    console = Console()
    if not console.is_terminal:  # a log file or pipe: keep each table row on one line
        console = Console(width=160)
    if encoder not in ENCODER_NAMES:
        raise typer.BadParameter(f"{encoder!r} is unknown; use one of {', '.join(ENCODER_NAMES)}",
                                 param_hint="--encoder")
    try:
        config = EvalConfig(seed=seed, holdout_fraction=holdout_fraction, min_votes=min_votes,
                            protocols=tuple(protocol) if protocol else PROTOCOLS,
                            rater_reliability=rater_reliability)
        conversations = load_polis(data)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    text_encoder = load_encoder(encoder, base_model)
    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("loading the encoder", total=None)
        report = evaluate(conversations, text_encoder, config,
                          progress=lambda step: progress.update(task, description=step))
    for table in render_tables(report):
        console.print(table)
    load_1m, load_5m, _ = report.load_average
    console.print(f"{len(conversations)} conversations, encoder {encoder}, seed {seed}: "
                  f"{time.perf_counter() - started:.0f} s (load average {load_1m:.1f} / {load_5m:.1f} "
                  "over 1 / 5 min)")
    if json_path is not None:
        write_json(report, json_path)
        console.print(f"JSON: {json_path}")
    if png is not None:
        plot_cold_start(report, png)
        console.print(f"cold-start curve: {png}")
