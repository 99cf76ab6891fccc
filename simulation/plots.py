"""Tables and plots of a `tailor simulate` summary (the dict of harness.summarize)."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from rich.table import Table

from simulation.styles import STYLES


def _arrow(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{values[0]:.2f}->{values[-1]:.2f}"


def users_table(summary: dict) -> Table:
    """Per user: taste, habit and the first -> last window of each measurement."""
    table = Table(title="simulated users: evaluation samples, first window -> last window")
    table.add_column("user", overflow="fold")
    table.add_column("habit")
    table.add_column("prefers", overflow="fold")
    for column in ("preferred", "score", "dismissive"):
        table.add_column(column, justify="right", no_wrap=True, min_width=11)
    table.add_column("events", justify="right")
    table.add_column("adapter", justify="right", overflow="fold")
    for user_id, user in summary["users"].items():
        table.add_row(
            user_id + (" [red](error)[/]" if user.get("error") else ""),
            user["habit"] + ("+score" if user.get("scores") else ""),
            ",".join(user["preferred_styles"]),
            _arrow(user["preferred_rate"]),
            _arrow(user["mean_score"]),
            _arrow(user["dismissive_rate"]),
            str(user["feedback_events"]),
            (user["adapter_version"] or ["-"])[-1].removeprefix("tailor-"),
        )
    return table


def styles_table(summary: dict) -> Table:
    """The style distribution over every evaluation sample of every user."""
    table = Table(title="style distribution of all evaluation samples")
    names = [*STYLES, "none"]
    for name in names:
        table.add_column(name, justify="right")
    distribution = summary["style_distribution"]
    table.add_row(*(f"{distribution.get(name, 0.0):.1%}" for name in names))
    return table


def plot_curves(summary: dict, path: Path) -> Path:
    """A PNG with one panel per user: preferred rate, mean score and dismissive rate per window."""
    users = summary["users"]
    columns = min(2, max(1, len(users)))
    rows = math.ceil(len(users) / columns) if users else 1
    figure = Figure(figsize=(6 * columns, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, (user_id, user) in zip(axes.flat, users.items()):
        x = [(first + last) / 2 + 1 for first, last in user["windows"]]  # window middle, 1-based
        axis.plot(x, user["preferred_rate"], marker="o", label="preferred-style rate")
        axis.plot(x, user["mean_score"], marker="s", label="mean hidden score")
        axis.plot(x, user["dismissive_rate"], marker="^", label="dismissive rate", color="tab:red")
        axis.axhline(0.0, color="grey", linewidth=0.5)
        axis.set_ylim(-1.05, 1.05)
        axis.set_xlabel("round")
        axis.set_title(f"{user_id} (prefers {', '.join(user['preferred_styles'])})", fontsize=9)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(users):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
