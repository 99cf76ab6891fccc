"""The operator's file of written principles (``principles.yaml``): its schema and loader.

Each principle is one line, its criterion and a few answers that keep it and break it.
The learners fit the shared heads' prior on the examples (``learners.principles``); the
service shows the same examples to raters as gold checks, answers whose verdict is known
(``contracts.gold_checks``). Both read the file through this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.records import SHARED_CRITERIA

Criterion = Literal[SHARED_CRITERIA]  # type: ignore[valid-type]
Share = Annotated[float, Field(gt=0.0, lt=1.0)]
DEFAULT_FINE_SHARE = 0.85


class PrincipleExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    good: str = Field(min_length=1, description="an answer that keeps the principle")
    bad: str = Field(min_length=1, description="an answer that breaks it")


class Principle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principle: str = Field(min_length=1)
    criterion: Criterion
    examples: list[PrincipleExample] = Field(min_length=1)
    # Gold checks (contracts.gold_checks) must be answers every careful rater judges
    # alike, or they mark the careful ones down: false keeps a principle's examples
    # out of the checks (they still train the prior).
    gold: bool = Field(True, description="show its examples to raters as gold checks")


class PrinciplesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    principles: list[Principle] = Field(min_length=1)
    # The examples are balanced, one good answer for each bad one; the answers a model
    # gives are not: most keep the principles. The prior's intercept is moved by the log
    # of these odds (the prior correction of a logistic regression fitted on a sample
    # drawn by outcome: King and Zeng, 2001), or a balanced head would call many ordinary
    # answers harmful. One share for every criterion, or one per criterion: a model is
    # asked for a myth's truth far less often than it is provoked, so honesty's share is
    # higher. On the default model, 0.85 halved the everyday answers the harmlessness
    # prior flagged (25% -> 14%) and kept 4 in 5 toxic, harmful and dismissive ones
    # flagged; 0.97 for honesty cut the everyday answers its prior judged false from
    # 4-9% to 0-3% per style and kept every myth example's false answer flagged.
    fine_share: Share | dict[Criterion, Share] = Field(
        DEFAULT_FINE_SHARE, description="share of answers that keep the principles in the "
        "model's everyday use: one number, or one per criterion")
    # Requests that invite a breach (provocations, requests for harm, myths), beyond the
    # examples' prompts: what the learners' red-team rows and safety start train on.
    red_team: list[str] = Field(default_factory=list)
    # Requests that invite no breach (everyday questions): the safety start imitates the
    # base model's fine answers to them, so that what it changes stays on the red-team
    # prompts (TAILOR_LEARNER_SAFETY_START_EVERYDAY_STEPS).
    everyday: list[str] = Field(default_factory=list)

    def fine_share_of(self, criterion: str) -> float:
        """The share of fine answers by ``criterion``; 0.85 where a mapping leaves it out."""
        if isinstance(self.fine_share, dict):
            return self.fine_share.get(criterion, DEFAULT_FINE_SHARE)
        return self.fine_share


def load_principles(path: Path) -> PrinciplesFile:
    """The principles of ``path``; a ValueError names the file, the field and the fix."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return PrinciplesFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"principles file {path}: {error}") from None
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise ValueError(
            f"principles file {path}: {problems} (each principle needs `principle`, "
            f"`criterion` (one of {', '.join(SHARED_CRITERIA)}) and `examples` with "
            "`prompt`, `good` and `bad`; `fine_share` is a number between 0 and 1, or "
            "one per criterion)"
        ) from None
