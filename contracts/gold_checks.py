"""Gold checks: answers whose verdict is known, shown to raters now and then.

Crowdsourcing's standard test of a rater (the "gold questions" or "test questions" of
labelling platforms): besides judging their own answers, a rater is asked to judge a
few answers whose verdict the operator wrote down, the written principles' good and bad
examples. In Tailor a rater mostly judges the answers their own assistant gave, and
once the shared heads work, those rarely break a principle: a rater who believes every
myth judged 2-7 false answers in a 60-judgment demo run, too few to tell them from a
careful one. A check gives that rater a false answer to judge whatever they are served.

Their answers enter the reliability model with the truth known (``learners.
rater_reliability``: they count toward a rater's sensitivity and specificity, not
toward the heads, whose prior the same examples already trained). Which answer a check
shows, and whether it is good or bad, is never sent to the rater: a check's id is a
digest of its content, not an index a client could read the verdict from.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import asdict, dataclass

from contracts.principles_file import PrinciplesFile

CHECK_ID_PREFIX = "gold-"


@dataclass(frozen=True)
class GoldCheck:
    id: str
    criterion: str  # harmless | honest
    principle: str
    prompt: str
    answer: str
    fine: bool  # the known verdict: the answer keeps the principle


@dataclass(frozen=True)
class GoldAnswer:
    """One rater's verdict on one check, stored with the known verdict beside it."""

    check_id: str
    criterion: str
    fine: bool  # the known verdict
    said_fine: bool  # the rater's
    at: float  # unix seconds

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> GoldAnswer:
        return cls(**json.loads(raw))


def gold_deck(principles: PrinciplesFile) -> list[GoldCheck]:
    """Every check the principles give: each example of a gold principle twice, its good
    and its bad answer (a deck of only bad answers would teach a rater that checks are
    always bad)."""
    deck = []
    for principle in principles.principles:
        if not principle.gold:
            continue
        for example in principle.examples:
            for answer, fine in ((example.good, True), (example.bad, False)):
                digest = hashlib.sha256(json.dumps(
                    [principle.criterion, example.prompt, answer]).encode()).hexdigest()
                deck.append(GoldCheck(CHECK_ID_PREFIX + digest[:16], principle.criterion,
                                      principle.principle, example.prompt, answer, fine))
    return deck


def next_check(deck: list[GoldCheck], user_id: str, answered: set[str],
               judged: dict[str, int] | None = None) -> GoldCheck | None:
    """The next check for ``user_id`` that they have not answered; None when they answered
    every one.

    Its criterion is the one the user's record is thinnest on: the fewest judgments of it
    (``judged``) plus checks of it answered. In a demo run the raters judged harmlessness
    four times as often as honesty (two of the three kinds of prompt that invite a
    misbehaviour test harm), and a rater's honesty was estimated from two judgments.
    Within a criterion a bad answer comes first and then a good one, in an order of the
    user's own: the verdict a rater's own traffic rarely shows is "breaks it"."""
    rng = random.Random(f"gold:{user_id}")
    criteria = sorted({check.criterion for check in deck})
    rng.shuffle(criteria)  # ties go a way of the user's own
    queues = {}
    for criterion in criteria:
        bad = [c for c in deck if c.criterion == criterion and not c.fine]
        good = [c for c in deck if c.criterion == criterion and c.fine]
        rng.shuffle(bad)
        rng.shuffle(good)
        queues[criterion] = [c for c in _alternate([bad, good]) if c.id not in answered]
    record = {criterion: (judged or {}).get(criterion, 0) for criterion in criteria}
    for check in deck:
        if check.id in answered:
            record[check.criterion] += 1
    open_criteria = [c for c in criteria if queues[c]]
    if not open_criteria:
        return None
    thinnest = min(open_criteria, key=lambda c: record[c])  # min keeps the first of ties
    return queues[thinnest][0]


def _alternate(lists: list[list[GoldCheck]]) -> list[GoldCheck]:
    """One from each list in turn, then the longer lists' rest."""
    return [item for group in itertools.zip_longest(*lists) for item in group
            if item is not None]
