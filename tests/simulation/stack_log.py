"""What a failing closed-loop test quotes of the learners' log: CI keeps a failed run's
output, not its stack's data folder."""

from __future__ import annotations

from pathlib import Path


def updates_of(stack_dir: Path, user_id: str) -> list[str]:
    """The lines of ``stack_dir``'s `tailor up` log about ``user_id``'s updates: every PPO
    iteration's KL, the stops and rollbacks, the gate's numbers and refusals."""
    log = stack_dir / "tailor-up.log"
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    # from the logger's name on: Ray's prefix (actor, pid, time) says nothing here
    return [line.split("INFO ")[-1].split("WARNING ")[-1][:300] for line in lines
            if f"update of {user_id}" in line or f"user {user_id}:" in line]
