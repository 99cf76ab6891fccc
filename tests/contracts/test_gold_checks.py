"""The deck of gold checks the written principles give, and the order a user meets it in."""

from __future__ import annotations

from contracts.gold_checks import GoldAnswer, gold_deck, next_check
from contracts.principles_file import PrinciplesFile, load_principles
from contracts.settings import DEFAULT_MODEL_DIR

SHIPPED = DEFAULT_MODEL_DIR / "principles.yaml"


def principles(gold_brush_offs: bool = False) -> PrinciplesFile:
    def example(n: int) -> dict:
        return {"prompt": f"question {n}", "good": f"fine answer {n}", "bad": f"bad answer {n}"}

    return PrinciplesFile.model_validate({"principles": [
        {"principle": "No insults.", "criterion": "harmless",
         "examples": [example(1), example(2), example(3)]},
        {"principle": "No brush-offs.", "criterion": "harmless", "gold": gold_brush_offs,
         "examples": [example(4)]},
        {"principle": "No myths.", "criterion": "honest", "examples": [example(5), example(6)]},
    ]})


def test_every_example_of_a_gold_principle_is_two_checks_its_good_and_its_bad_answer():
    deck = gold_deck(principles())
    assert len(deck) == 2 * (3 + 2)  # the brush-offs are not gold
    assert {(c.answer, c.fine) for c in deck if c.prompt == "question 1"} == {
        ("fine answer 1", True), ("bad answer 1", False)}
    assert len(gold_deck(principles(gold_brush_offs=True))) == 2 * 6
    # the id is a digest of the content: it does not say which answer is the good one
    assert len({c.id for c in deck}) == len(deck)
    assert all(c.id.startswith("gold-") and "fine" not in c.id for c in deck)
    assert [c.id for c in gold_deck(principles())] == [c.id for c in deck]  # stable


def test_a_user_meets_the_criteria_in_turn_a_bad_answer_first_and_every_check_once():
    deck = gold_deck(principles())
    answered: set[str] = set()
    seen = []
    while (check := next_check(deck, "alice", answered)) is not None:
        seen.append(check)
        answered.add(check.id)
    assert sorted(c.id for c in seen) == sorted(c.id for c in deck)
    first_four = seen[:4]
    assert {c.criterion for c in first_four[:2]} == {"harmless", "honest"}
    assert [c.fine for c in first_four] == [False, False, True, True]
    # each user has an order of their own
    orders = {tuple(c.id for c in _order(deck, user)) for user in ("alice", "bob", "carol", "dan")}
    assert len(orders) > 1


def _order(deck, user_id, judged=None):
    answered: set[str] = set()
    while (check := next_check(deck, user_id, answered, judged)) is not None:
        answered.add(check.id)
        yield check


def test_checks_go_to_the_criterion_the_users_record_is_thinnest_on():
    deck = gold_deck(principles())  # 6 harmless checks, 4 honest
    order = list(_order(deck, "alice", judged={"harmless": 3, "honest": 0}))
    # honesty until its 3 checks match harmlessness's 3 judgments, then in turn, then
    # what is left of harmlessness once honesty's 4 are used up
    assert [c.criterion for c in order[:3]] == ["honest"] * 3
    assert {c.criterion for c in order[3:5]} == {"harmless", "honest"}
    assert [c.criterion for c in order[5:]] == ["harmless"] * 5
    assert [c.fine for c in order[:3]] == [False, True, False]  # bad first, then in turn


def test_the_shipped_principles_give_checks_of_both_criteria_and_keep_brush_offs_out():
    shipped = load_principles(SHIPPED)
    deck = gold_deck(shipped)
    assert {c.criterion for c in deck} == {"harmless", "honest"}
    brush_offs = next(p for p in shipped.principles if "brush" in p.principle)
    assert not brush_offs.gold
    assert not {e.bad for e in brush_offs.examples} & {c.answer for c in deck}


def test_a_gold_answer_round_trips_through_json():
    answer = GoldAnswer("gold-0123", "honest", fine=False, said_fine=True, at=1.5)
    assert GoldAnswer.from_json(answer.to_json()) == answer
