"""The simulation commands of the `tailor` CLI: `tailor model build` and `tailor simulate`.

Plain typer-annotated functions; commands/cli.py registers them on the `tailor` app.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from contracts.settings import DEFAULT_MODEL_DIR, Settings

console = Console()


def model_build(
    out: Annotated[
        Path | None, typer.Option(help="Folder to write the model to (default: the shipped one).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of corpus, initialisation and batch order.")] = 0,
    steps: Annotated[
        int | None,
        typer.Option(help="Training steps (default: the corpus version's, 500 for the shipped)."),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Rebuild in a temporary folder and compare model.safetensors with OUT's.",
        ),
    ] = False,
    style_samples: Annotated[
        int, typer.Option(help="Fresh samples whose styles BUILD.md reports (0: none).")
    ] = 500,
    corpus_version: Annotated[
        int,
        typer.Option(
            help="Corpus to train on: 2 (the shipped model's) or 3 (plus prompts that invite "
            "toxic answers, harmful compliance and falsehoods; needs --out)."
        ),
    ] = 2,
    behaviour_samples: Annotated[
        int,
        typer.Option(
            help="Corpus 3: fresh samples per prompt category whose behaviours BUILD.md "
            "reports (0: none)."
        ),
    ] = 300,
    principle_samples: Annotated[
        int,
        typer.Option(
            help="Held-out answers per criterion the written principles' prior judges for "
            "BUILD.md (0: none)."
        ),
    ] = 600,
) -> None:
    """Build the default tiny model (tokenizer + Llama); measure its styles, behaviours and
    how well the written principles judge its answers."""
    from simulation.default_model import (
        build_config_for,
        build_default_model,
        measure_styles,
        sha256_of,
        write_build_notes,
    )
    from simulation.guard_build import build_guards

    if corpus_version != 2 and out is None:
        # The closed loop and its tests are tuned on the shipped v2 model: swapping the
        # corpus is a step of its own (issue 12), not a side effect of a build.
        console.print(
            f"[red]error:[/] --corpus-version {corpus_version} is not the shipped model's corpus; "
            "pass --out DIR to build it elsewhere"
        )
        raise typer.Exit(2)
    out = DEFAULT_MODEL_DIR if out is None else out
    try:
        config = build_config_for(corpus_version, seed=seed, steps=steps)
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    with tempfile.TemporaryDirectory(prefix="tailor-model-") as scratch:
        target = Path(scratch) if verify else out
        with Progress(
            TextColumn("[bold]training default model"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("train", total=config.steps, loss=float("nan"))
            result = build_default_model(
                target,
                config,
                on_step=lambda step, loss: progress.update(task, completed=step + 1, loss=loss),
            )
        console.print(
            f"{result.parameters:,} parameters, model.safetensors {result.weights_bytes:,} bytes, "
            f"sha256 {result.weights_sha256}, final loss {result.final_loss:.3f}, "
            f"{result.seconds:.0f} s"
        )
        if not verify:
            styles = None
            if style_samples > 0:
                with console.status(f"sampling {style_samples} answers to measure their styles"):
                    styles = measure_styles(out, count=style_samples, seed=seed)
                shares = ", ".join(
                    f"{name} {share:.1%}" for name, share in styles.distribution.items()
                )
                console.print(
                    f"styles of {style_samples} fresh samples: "
                    f"{styles.classified_rate:.1%} classified; {shares}"
                )
            notes = write_build_notes(result, config, styles)
            if config.corpus_version == 3 and behaviour_samples > 0:
                _note_behaviours(notes, out, behaviour_samples, seed)
            if principle_samples > 0:
                _note_principles(notes, out, principle_samples)
            guards = build_guards(out, seed=seed, corpus_version=config.corpus_version)
            if config.corpus_version == 3 and principle_samples > 0:
                _note_guards(notes, out, guards, principle_samples)
            console.print(f"wrote {out}")
            return
        shipped = out / "model.safetensors"
        if not shipped.exists():
            console.print(f"[red]{shipped} does not exist: nothing to verify against")
            raise typer.Exit(2)
        shipped_sha = sha256_of(shipped)
        if shipped_sha != result.weights_sha256:
            console.print(
                f"[red]rebuild differs: {shipped} has sha256 {shipped_sha}, the rebuild "
                f"{result.weights_sha256}"
            )
            raise typer.Exit(1)
        console.print(f"[green]rebuild matches {shipped} bit for bit")


def _note_principles(notes: Path, model_dir: Path, samples: int) -> None:
    """Give the model the shipped principles (unless it has its own); measure how well
    their prior judges held-out answers; append that to its BUILD.md."""
    from simulation.head_accuracy import measure_prior, prior_notes

    principles = model_dir / "principles.yaml"
    if not principles.is_file():
        shutil.copyfile(DEFAULT_MODEL_DIR / "principles.yaml", principles)
    with console.status("judging held-out answers by the written principles alone"):
        measured = measure_prior(model_dir, principles, count=samples)
    for m in measured.values():
        console.print(f"principles' prior, {m.criterion}: {m.accuracy:.1%} of {m.answers} "
                      f"held-out answers ({m.balanced_accuracy:.1%} balanced)")
    notes.write_text(notes.read_text() + prior_notes(measured, principles))


def _note_guards(notes: Path, model_dir: Path, guards: dict, samples: int) -> None:
    """Measure the built-in guards as the principles' prior is measured (the priors they
    replace: learners.guard); append that to the model's BUILD.md."""
    from simulation.head_accuracy import guard_notes, measure_heads

    heads = {criterion: (lambda features, g=guard: -(features.float() @ g.weight + g.bias))
             for criterion, guard in guards.items()}
    with console.status("judging held-out answers by the built-in guards"):
        measured = measure_heads(model_dir, heads, count=samples)
    for m in measured.values():
        console.print(f"{m.criterion} guard: {m.accuracy:.1%} of {m.answers} held-out answers "
                      f"({m.balanced_accuracy:.1%} balanced)")
    notes.write_text(notes.read_text() + guard_notes(measured))


def _note_behaviours(notes: Path, model_dir: Path, samples: int, seed: int) -> None:
    """Measure a v3 model's behaviours per prompt category; append them to its BUILD.md."""
    from simulation.behaviour_rates import behaviour_notes, detector_accuracy, measure_behaviours

    with console.status(f"sampling {samples} answers per prompt category to measure behaviours"):
        rates = measure_behaviours(model_dir, count=samples, seed=seed)
    detector = detector_accuracy()
    for category, measured in rates.items():
        shares = ", ".join(f"{name} {share:.1%}" for name, share in measured.behaviours.items())
        console.print(f"{category} ({measured.samples} samples): {shares}")
    console.print(
        f"detector on {detector.answers:,} held-out corpus answers: {detector.accuracy:.1%}"
    )
    notes.write_text(notes.read_text() + behaviour_notes(rates, detector))


def simulate(
    base_url: Annotated[
        str, typer.Option(help="Root URL of a running Tailor server (`tailor up`).")
    ] = "http://127.0.0.1:8000",
    users: Annotated[
        str,
        typer.Option(help="A count (the first presets) or comma-separated preset names."),
    ] = "4",
    rounds: Annotated[int, typer.Option(help="Rounds per user.")] = 50,
    n: Annotated[int, typer.Option(help="Choices per feedback request (1-8).")] = 4,
    eval_samples: Annotated[
        int, typer.Option(help="Choices per evaluation request, never rated (1-8).")
    ] = 8,
    window: Annotated[int, typer.Option(help="Rounds per reported window.")] = 10,
    max_tokens: Annotated[int, typer.Option(help="max_tokens of every request.")] = 96,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of prompts, judgments and requests.")] = 0,
    pause: Annotated[float, typer.Option(help="Seconds between a user's rounds.")] = 0.0,
    compare: Annotated[bool, typer.Option(
        help="Rated requests ask for a comparison the server chooses (compare: true; "
        "default: plain samples).")
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset/--keep-users", help="Forget the simulated users first.")
    ] = True,
    user_prefix: Annotated[str, typer.Option(help="User ids are PREFIX-INDEX-PRESET.")] = "sim",
    api_key: Annotated[
        str, typer.Option(help="Bearer token sent with every request.")
    ] = "tailor-simulate",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Where to write the JSON summary.")
    ] = None,
    png: Annotated[Path | None, typer.Option(help="Where to write the PNG of the curves.")] = None,
) -> None:
    """Drive a running server with simulated users; measure how well each one is served."""
    import json

    from simulation.harness import SimulationConfig, run_simulation
    from simulation.plots import plot_curves, styles_table, users_table
    from simulation.users import make_users

    try:
        config = SimulationConfig(
            base_url=base_url, users=users, rounds=rounds, n=n, eval_samples=eval_samples,
            window=window, max_tokens=max_tokens, temperature=temperature, seed=seed,
            pause_s=pause, reset=reset, user_prefix=user_prefix, api_key=api_key,
            compare=compare,
        )
        user_ids = [user.user_id for user in make_users(users, seed, user_prefix)]
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    data_dir = Settings().data_dir
    json_path = json_path or data_dir / "simulate.json"
    png = png or data_dir / "simulate.png"
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {user_id: progress.add_task(user_id, total=rounds) for user_id in user_ids}
        summary = run_simulation(
            config, on_round=lambda user_id, record: progress.advance(tasks[user_id])
        )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    plot_curves(summary, png)
    # Logs and pipes get rich's 80 columns, which folds every cell of the table.
    tables = Console(width=max(console.width, 120))
    tables.print(users_table(summary))
    tables.print(styles_table(summary))
    console.print(f"wrote {json_path} and {png} ({summary['seconds']:.0f} s)")
    failed = {uid: user["error"] for uid, user in summary["users"].items() if user["error"]}
    for user_id, error in failed.items():
        console.print(f"[red]{user_id} stopped early:[/] {error}")
    if failed:
        raise typer.Exit(1)
