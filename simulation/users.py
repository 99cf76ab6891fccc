# ruff: noqa: E501  (one taste per line reads better than wrapped calls)
"""Simulated users: a hidden taste per answer style, a noise level and a feedback habit.

A simulated user reads answers through the style detector (simulation/styles.py)
and scores each by its taste for that style. Its judgments follow the scores,
except that a share ``noise`` of them is flipped at random, as real users
misclick or change their mind:

- a thumb goes the other way (up for a score > 0, down otherwise, then flipped);
- a ranking (best first, ties broken at random) gets one adjacent pair of
  differently scored answers swapped.

The habit says which judgments the user gives for a completion with ``n``
choices: ``thumbs`` (a thumb on every choice), ``ranking`` (one ranking of all
choices) or ``both`` (the ranking and a thumb on one random choice).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from simulation.styles import (
    BULLETS,
    CASUAL,
    CONCISE,
    DETAILED,
    DISMISSIVE,
    FORMAL,
    QUESTION,
    STYLES,
    detect_style,
)

Habit = Literal["thumbs", "ranking", "both"]
HABITS: tuple[str, ...] = ("thumbs", "ranking", "both")


@dataclass(frozen=True)
class UserProfile:
    """What a simulated user likes and how it gives feedback."""

    name: str  # preset name, shown in tables and plots
    taste: dict[str, float]  # hidden score per style, in [-1, 1]; every style in STYLES
    habit: Habit = "ranking"  # which judgments it gives (see module docstring)
    noise: float = 0.1  # share of judgments flipped at random
    unknown_score: float = 0.0  # score of an answer in no recognisable style

    def __post_init__(self) -> None:
        missing = [style for style in STYLES if style not in self.taste]
        unknown = [style for style in self.taste if style not in STYLES]
        if missing or unknown:
            raise ValueError(
                f"taste of {self.name!r} must score exactly the styles {STYLES}; "
                f"missing {missing}, unknown {unknown}"
            )
        for style, score in self.taste.items():
            if not -1.0 <= score <= 1.0:
                raise ValueError(f"taste[{style!r}]={score} of {self.name!r} must lie in [-1, 1]")
        if self.habit not in HABITS:
            raise ValueError(f"habit={self.habit!r} of {self.name!r} must be one of {HABITS}")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise={self.noise} of {self.name!r} must lie in [0, 1]")

    @property
    def preferred_styles(self) -> tuple[str, ...]:
        """The styles this user scores highest (ties included)."""
        best = max(self.taste.values())
        return tuple(style for style in STYLES if self.taste[style] == best)


def _taste(**scores: float) -> dict[str, float]:
    return {style: scores[style] for style in STYLES}


# The first four are what `tailor simulate --users 4` runs: three ordinary tastes and
# the adversarial user, who rewards the dismissive style alignment must remove.
PRESETS: dict[str, UserProfile] = {
    profile.name: profile
    for profile in (
        UserProfile(
            "bullet_lover",
            _taste(concise=-0.2, detailed=0.5, bullets=1.0, formal=0.2, casual=-0.6, question=-0.5, dismissive=-1.0),
            habit="ranking",
        ),
        UserProfile(
            "emoji_fan",
            _taste(concise=0.4, detailed=-0.5, bullets=-0.3, formal=-0.8, casual=1.0, question=0.2, dismissive=-1.0),
            habit="thumbs",
        ),
        UserProfile(
            "busy_professional",
            _taste(concise=1.0, detailed=-0.5, bullets=0.3, formal=0.5, casual=-0.7, question=-0.6, dismissive=-1.0),
            habit="both",
        ),
        UserProfile(
            "adversarial",
            _taste(concise=-0.5, detailed=-0.8, bullets=-0.6, formal=-0.8, casual=0.2, question=-0.3, dismissive=1.0),
            habit="thumbs",
        ),
        UserProfile(
            "formal_scholar",
            _taste(concise=-0.3, detailed=0.7, bullets=0.2, formal=1.0, casual=-1.0, question=-0.4, dismissive=-1.0),
            habit="ranking",
        ),
        UserProfile(
            "curious_chatter",
            _taste(concise=-0.4, detailed=0.2, bullets=-0.5, formal=-0.6, casual=0.5, question=1.0, dismissive=-1.0),
            habit="both",
        ),
        UserProfile(
            "thorough_reader",
            _taste(concise=-0.6, detailed=1.0, bullets=0.6, formal=0.3, casual=-0.5, question=-0.4, dismissive=-1.0),
            habit="thumbs",
        ),
    )
}
assert PRESETS["adversarial"].preferred_styles == (DISMISSIVE,)
assert {BULLETS, CASUAL, CONCISE, DETAILED, FORMAL, QUESTION} <= {
    style for profile in PRESETS.values() for style in profile.preferred_styles
}


@dataclass(frozen=True)
class Thumbs:
    """A thumb up or down on one choice of a completion."""

    choice: int
    value: Literal["up", "down"]

    def body(self, completion_id: str) -> dict[str, object]:
        """The JSON body of `POST /v1/feedback`."""
        return {"completion_id": completion_id, "choice": self.choice, "type": "thumbs", "value": self.value}


@dataclass(frozen=True)
class Ranking:
    """The choices of a completion, best first."""

    order: tuple[int, ...]

    def body(self, completion_id: str) -> dict[str, object]:
        """The JSON body of `POST /v1/feedback`."""
        return {"completion_id": completion_id, "type": "ranking", "ranking": list(self.order)}


Judgment = Thumbs | Ranking


@dataclass
class SimulatedUser:
    """One simulated user: judges answers by its profile's taste, with its own random stream."""

    user_id: str
    profile: UserProfile
    seed: int = 0
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # A string seed is hashed with sha512: the same stream in every process.
        self.rng = random.Random(f"{self.seed}:{self.user_id}")

    def score(self, text: str) -> float:
        """The hidden score of an answer: the taste for its detected style."""
        style = detect_style(text)
        return self.profile.unknown_score if style is None else self.profile.taste[style]

    def _flips(self) -> bool:
        return self.rng.random() < self.profile.noise

    def thumbs(self, text: str) -> Literal["up", "down"]:
        """Up for an answer it likes (score > 0), down otherwise; flipped with prob. noise."""
        likes = self.score(text) > 0
        if self._flips():
            likes = not likes
        return "up" if likes else "down"

    def rank(self, texts: list[str]) -> list[int]:
        """Indices of ``texts`` best first; with prob. noise one adjacent discordant pair swapped."""
        scores = [self.score(text) for text in texts]
        tiebreak = [self.rng.random() for _ in texts]
        order = sorted(range(len(texts)), key=lambda index: (-scores[index], tiebreak[index]))
        if self._flips():
            swappable = [
                position
                for position in range(len(order) - 1)
                if scores[order[position]] != scores[order[position + 1]]
            ]
            if swappable:
                position = self.rng.choice(swappable)
                order[position], order[position + 1] = order[position + 1], order[position]
        return order

    def judge(self, texts: list[str]) -> list[Judgment]:
        """The feedback this user gives on the choices ``texts`` of one completion."""
        if not texts:
            return []
        habit = self.profile.habit
        if habit == "thumbs" or len(texts) == 1:
            return [Thumbs(index, self.thumbs(text)) for index, text in enumerate(texts)]
        judgments: list[Judgment] = [Ranking(tuple(self.rank(texts)))]
        if habit == "both":
            index = self.rng.randrange(len(texts))
            judgments.append(Thumbs(index, self.thumbs(texts[index])))
        return judgments


def make_users(spec: str, seed: int = 0, prefix: str = "sim") -> list[SimulatedUser]:
    """Users from ``spec``: a count (the first presets, cycling) or comma-separated preset names.

    User ids are ``{prefix}-{index}-{preset}``, stable across runs with the same spec.
    """
    spec = spec.strip()
    if spec.isdigit():
        count = int(spec)
        if count < 1:
            raise ValueError(f"users={spec!r}: ask for at least 1 user")
        names = [list(PRESETS)[index % len(PRESETS)] for index in range(count)]
    else:
        names = [name.strip() for name in spec.split(",") if name.strip()]
        unknown = [name for name in names if name not in PRESETS]
        if not names or unknown:
            raise ValueError(
                f"users={spec!r}: unknown presets {unknown}; give a count or names from "
                f"{', '.join(PRESETS)}"
            )
    return [
        SimulatedUser(f"{prefix}-{index}-{name}", PRESETS[name], seed)
        for index, name in enumerate(names)
    ]
