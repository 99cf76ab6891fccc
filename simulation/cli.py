"""The simulation commands of the `tailor` CLI: `tailor model build` and `tailor simulate`.

Plain typer-annotated functions; service/cli.py registers them on the `tailor` app.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from service.settings import DEFAULT_MODEL_DIR

console = Console()


def model_build(
    out: Annotated[Path, typer.Option(help="Folder to write the model to.")] = DEFAULT_MODEL_DIR,
    seed: Annotated[int, typer.Option(help="Seed of corpus, initialisation and batch order.")] = 0,
    steps: Annotated[
        int | None, typer.Option(help="Training steps (default: the shipped model's).")
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Rebuild in a temporary folder and compare model.safetensors with OUT's.",
        ),
    ] = False,
) -> None:
    """Train the default model's tokenizer and tiny Llama on the synthetic corpus."""
    from simulation.default_model import (
        BuildConfig,
        build_default_model,
        sha256_of,
        write_build_notes,
    )

    config = BuildConfig(seed=seed) if steps is None else BuildConfig(seed=seed, steps=steps)
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
            write_build_notes(result, config)
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
