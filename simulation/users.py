# ruff: noqa: E501  (one taste per line reads better than wrapped calls)
"""Simulated users: a hidden taste per answer style, a noise level and a feedback habit.

A simulated user reads answers through the style detector (simulation/styles.py)
and scores each by its taste for that style, a hidden score ``t`` in [-1, 1].

**Thumbs.** A person thumbs up what they love more readily than what they merely
accept: the chance of a thumbs-up rises with the hidden score instead of jumping
at a threshold, ``P(up | t) = σ((t − up_midpoint) / up_spread)`` (`up_probability`).
With the defaults (midpoint 0.3, spread 0.1) a loved answer (t ≥ 0.7) gets an up
98-100% of the time, an accepted one (t 0.2-0.4) 27-73%, an indifferent or
disliked one (t ≤ 0) under 5%. Every preset rates this way, the adversarial user
too: it is how people give thumbs, not a trait of some of them, and a hard
threshold (``up_spread=0``: up iff t > midpoint) would make every thumbs user an
idealised rater whose thumbs never tell a loved style from an accepted one. The
hard threshold stays available for tests that need deterministic thumbs.

**Scores.** A user with ``scores=True`` gives a 1-10 score with each thumb, as chat
front-ends rate, derived from the same hidden score: ``score_of(t) =
round_half_up(5.5 + 4.5 t)`` (−1 → 1, 0 → 6, 0.4 → 7, 1 → 10), without its own
randomness: a person scores the same kind of answer the same way, and says with
the score what a thumb cannot (which liked answer it likes most).

**Noise.** A share ``noise`` of judgments is a mistake (a misclick, a changed mind),
the same share for every kind of judgment:

- a thumb goes the other way (after the draw above), and its score, if any, is
  mirrored with it (s → 11 − s: an up with 10 becomes a down with 1), so the thumb
  and the score of one judgment never contradict each other;
- a ranking (best first, ties broken at random) gets one adjacent pair of
  differently scored answers swapped.

The habit says which judgments the user gives for a completion with ``n``
choices: ``thumbs`` (a thumb on every choice), ``ranking`` (one ranking of all
choices) or ``both`` (the ranking and a thumb on one random choice).

**Harmless and honest** (corpus v3, issue 12). Asked something that invites a
misbehaviour (a provocation, a request for harm, a myth), a user judges what the
answers do rather than how they are written: one thumb tagged with the criterion the
prompt tests (``harmless`` for provocations and requests for harm, ``honest`` for
myths), on the answer that stands out — the first that misbehaves, else a random
one — as a person reports the bad answer rather than grading all four. One judgment,
not one per choice: with a thumb on every choice the criterion judgments took 40%
of a ranking user's 60 and their taste barely moved (+2..+7 points in a tailor demo
run). How they judge is their ``rater`` kind:

- ``truthful``: up when the answer keeps the criterion (no toxic answer, no
  harmful compliance, no falsehood), down when it breaks it; ``noise`` flips it;
- ``random`` (the poor rater): a coin flip for every such judgment;
- ``adversarial``: calls toxic answers and harmful compliance harmless (up) and
  the well-behaved answers to those prompts harmful (down); honest as truthful;
- ``credulous``: calls every answer to a myth honest (up), falsehoods included;
  harmless as truthful.

For taste (``helpful`` judgments) a misbehaviour has its own hidden score,
``behaviour_taste`` (ordinary users: −1 for toxic answers and harmful compliance;
the adversarial user: +1), overriding the style's; a falsehood is judged by its
style, since a user's taste cannot tell a myth from a fact.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

from simulation.behaviour_corpus import HARM_REQUEST, MYTH, PROVOCATION
from simulation.behaviours import HARMFUL_COMPLIANCE, MISBEHAVIOURS, TOXIC, detect_behaviour
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
RaterKind = Literal["truthful", "random", "adversarial", "credulous"]
RATER_KINDS: tuple[str, ...] = ("truthful", "random", "adversarial", "credulous")
# The criterion a prompt category tests (corpus v3); everyday prompts test taste.
TESTED_CRITERION: dict[str, str] = {PROVOCATION: "harmless", HARM_REQUEST: "harmless",
                                    MYTH: "honest"}
ORDINARY_BEHAVIOUR_TASTE = {TOXIC: -1.0, HARMFUL_COMPLIANCE: -1.0}


@dataclass(frozen=True)
class UserProfile:
    """What a simulated user likes and how it gives feedback."""

    name: str  # preset name, shown in tables and plots
    taste: dict[str, float]  # hidden score per style, in [-1, 1]; every style in STYLES
    habit: Habit = "ranking"  # which judgments it gives (see module docstring)
    noise: float = 0.1  # share of judgments flipped at random
    unknown_score: float = 0.0  # score of an answer in no recognisable style
    scores: bool = False  # a 1-10 score with each thumb (`score_of`); needs a habit with thumbs
    up_midpoint: float = 0.3  # hidden score at which a thumbs-up is a coin flip
    up_spread: float = 0.1  # how gradually P(up) rises around the midpoint; 0: a hard threshold
    rater: RaterKind = "truthful"  # how it judges harmless and honest (module docstring)
    # hidden score of a misbehaviour, overriding its style's (module docstring)
    behaviour_taste: dict[str, float] = field(
        default_factory=lambda: dict(ORDINARY_BEHAVIOUR_TASTE))

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
        if self.scores and self.habit == "ranking":
            raise ValueError(f"scores=True of {self.name!r} needs a habit that gives thumbs "
                             "(thumbs or both); a ranking already orders every choice")
        if not -1.0 <= self.up_midpoint <= 1.0:
            raise ValueError(f"up_midpoint={self.up_midpoint} of {self.name!r} must lie in [-1, 1]")
        if self.up_spread < 0.0:
            raise ValueError(f"up_spread={self.up_spread} of {self.name!r} must be >= 0 "
                             "(0: a hard threshold)")
        if self.rater not in RATER_KINDS:
            raise ValueError(f"rater={self.rater!r} of {self.name!r} must be one of {RATER_KINDS}")
        for behaviour, score in self.behaviour_taste.items():
            if behaviour not in MISBEHAVIOURS or not -1.0 <= score <= 1.0:
                raise ValueError(f"behaviour_taste[{behaviour!r}]={score} of {self.name!r}: "
                                 f"give scores in [-1, 1] for behaviours in {MISBEHAVIOURS}")

    @property
    def preferred_styles(self) -> tuple[str, ...]:
        """The styles this user scores highest (ties included)."""
        best = max(self.taste.values())
        return tuple(style for style in STYLES if self.taste[style] == best)

    @property
    def habit_label(self) -> str:
        """The habit as tables show it: ``thumbs+score`` for a thumbs user who scores."""
        return f"{self.habit}+score" if self.scores else self.habit


def up_probability(hidden_score: float, midpoint: float, spread: float) -> float:
    """The chance of a thumbs-up on an answer of this hidden score (module docstring)."""
    if spread == 0.0:
        return 1.0 if hidden_score > midpoint else 0.0
    return 1.0 / (1.0 + math.exp(-(hidden_score - midpoint) / spread))


def score_of(hidden_score: float) -> int:
    """The 1-10 score of a hidden score in [-1, 1]: linear, halves rounded up."""
    return min(10, max(1, math.floor(5.5 + 4.5 * hidden_score + 0.5)))


def _taste(**scores: float) -> dict[str, float]:
    return {style: scores[style] for style in STYLES}


# The first four are what `tailor simulate --users 4` runs: three ordinary tastes and
# the adversarial user, who rewards what alignment must remove (the dismissive style,
# toxic answers, harmful compliance) and calls it harmless.
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
            scores=True,
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
            rater="adversarial",
            behaviour_taste={TOXIC: 1.0, HARMFUL_COMPLIANCE: 1.0},
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
            scores=True,
        ),
        # Raters whose judgments of harmless and honest the shared heads must discount.
        UserProfile(
            "poor_rater",  # clicks almost at random, taste and criteria alike
            _taste(concise=0.3, detailed=0.3, bullets=0.3, formal=0.3, casual=0.3, question=0.3, dismissive=-0.5),
            habit="thumbs",
            noise=0.4,
            rater="random",
        ),
        UserProfile(
            "credulous",  # an ordinary taste; believes every myth it is told
            _taste(concise=0.5, detailed=-0.3, bullets=1.0, formal=0.2, casual=-0.4, question=-0.5, dismissive=-1.0),
            habit="ranking",
            rater="credulous",
        ),
    )
}
# `tailor demo`'s users: a ranker, the two thumbs users who score, a "both" and the adversary.
DEMO_USERS = "bullet_lover,emoji_fan,thorough_reader,busy_professional,adversarial"
# Issue 12's run (on a v3 model): three ordinary tastes, and the raters the shared heads
# must discount: adversarial, poor, credulous.
RATER_USERS = "bullet_lover,busy_professional,formal_scholar,adversarial,poor_rater,credulous"
assert PRESETS["adversarial"].preferred_styles == (DISMISSIVE,)
assert {BULLETS, CASUAL, CONCISE, DETAILED, FORMAL, QUESTION} <= {
    style for profile in PRESETS.values() for style in profile.preferred_styles
}


@dataclass(frozen=True)
class Thumbs:
    """A thumb up or down on one choice of a completion, with a 1-10 score or none."""

    choice: int
    value: Literal["up", "down"]
    score: int | None = None
    criterion: str = "helpful"

    def body(self, completion_id: str) -> dict[str, object]:
        """The JSON body of `POST /v1/feedback`."""
        body: dict[str, object] = {"completion_id": completion_id, "choice": self.choice, "type": "thumbs", "value": self.value}
        if self.score is not None:
            body["score"] = self.score
        if self.criterion != "helpful":
            body["criterion"] = self.criterion
        return body


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
        """The hidden score of an answer: its misbehaviour's if the user scores that, else
        the taste for its detected style."""
        behaviour_score = self.profile.behaviour_taste.get(detect_behaviour(text))
        if behaviour_score is not None:
            return behaviour_score
        style = detect_style(text)
        return self.profile.unknown_score if style is None else self.profile.taste[style]

    def criterion_thumb(self, choice: int, text: str, criterion: str) -> Thumbs:
        """A thumb on whether the answer keeps ``criterion``, as the user's rater kind
        judges it (module docstring)."""
        keeps = detect_behaviour(text) not in MISBEHAVIOURS
        rater = self.profile.rater
        if rater == "random":
            up = self.rng.random() < 0.5
        elif rater == "adversarial" and criterion == "harmless":
            up = not keeps
        elif rater == "credulous" and criterion == "honest":
            up = True
        else:
            up = keeps != self._flips()
        return Thumbs(choice, "up" if up else "down", criterion=criterion)

    def _flips(self) -> bool:
        return self.rng.random() < self.profile.noise

    def thumb(self, choice: int, text: str) -> Thumbs:
        """The thumb (and score, if it scores) on one answer; see the module docstring."""
        hidden = self.score(text)
        chance = up_probability(hidden, self.profile.up_midpoint, self.profile.up_spread)
        # no draw for a hard threshold: its thumbs use the random stream as before
        up = chance >= 1.0 or (chance > 0.0 and self.rng.random() < chance)
        score = score_of(hidden) if self.profile.scores else None
        if self._flips():  # one mistake turns the whole judgment: thumb and score together
            up = not up
            score = None if score is None else 11 - score
        return Thumbs(choice, "up" if up else "down", score)

    def thumbs(self, text: str) -> Literal["up", "down"]:
        """The thumb alone on one answer (see `thumb`)."""
        return self.thumb(0, text).value

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

    def judge(self, texts: list[str], category: str | None = None) -> list[Judgment]:
        """The feedback this user gives on the choices ``texts`` of one completion to a
        prompt of ``category`` (corpus v3; None or everyday: a question of taste)."""
        if not texts:
            return []
        criterion = TESTED_CRITERION.get(category or "")
        if criterion is not None:
            breaking = [i for i, text in enumerate(texts)
                        if detect_behaviour(text) in MISBEHAVIOURS]
            index = breaking[0] if breaking else self.rng.randrange(len(texts))
            return [self.criterion_thumb(index, texts[index], criterion)]
        habit = self.profile.habit
        if habit == "thumbs" or len(texts) == 1:
            return [self.thumb(index, text) for index, text in enumerate(texts)]
        judgments: list[Judgment] = [Ranking(tuple(self.rank(texts)))]
        if habit == "both":
            index = self.rng.randrange(len(texts))
            judgments.append(self.thumb(index, texts[index]))
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
