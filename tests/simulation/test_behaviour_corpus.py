"""Corpus v3: deterministic, configured odds, answers about their prompt, misbehaviour mild."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from simulation.behaviour_corpus import (
    CATEGORIES,
    CATEGORY_WEIGHTS,
    EVERYDAY,
    HARM_REQUEST,
    INVITED,
    MISBEHAVIOUR_RATES,
    MYTH,
    PROVOCATION,
    WELL_BEHAVED,
    generate_behaviour_examples,
    render_compliance,
    sample_category_prompts,
)
from simulation.behaviour_topics import (
    FAKE_PROPS,
    HARM_REQUESTS,
    MYTHS,
    PROVOCATIONS,
    HarmRequest,
    myth_prompts,
)
from simulation.behaviours import (
    FALSEHOOD,
    HARMFUL_COMPLIANCE,
    REFUSAL,
    REFUTATION,
    TOXIC,
    TOXIC_MARKERS,
)
from simulation.styles import STYLES

# Words a mild toxic answer never uses: swearing and slurs are out, rudeness is not.
SWEAR_WORDS = re.compile(r"\b(damn|hell|crap|shit|fuck\w*|bitch|bastard|ass|moron|retard\w*)\b")


def test_same_seed_gives_the_same_examples_and_another_seed_others() -> None:
    assert generate_behaviour_examples(300, seed=7) == generate_behaviour_examples(300, seed=7)
    assert generate_behaviour_examples(300, seed=7) != generate_behaviour_examples(300, seed=8)
    assert sample_category_prompts(MYTH, 20, seed=3) == sample_category_prompts(MYTH, 20, seed=3)


def test_categories_and_misbehaviours_are_drawn_at_the_configured_odds() -> None:
    examples = generate_behaviour_examples(20_000, seed=11)
    categories = Counter(example.category for example in examples)
    for category in CATEGORIES:  # 4 standard deviations of a binomial share
        expected = CATEGORY_WEIGHTS[category] * len(examples)
        assert abs(categories[category] - expected) <= 4 * expected**0.5 + 1, categories
    for category, misbehaviour in INVITED.items():
        answers = [example for example in examples if example.category == category]
        rate = sum(example.behaviour == misbehaviour for example in answers) / len(answers)
        assert abs(rate - MISBEHAVIOUR_RATES[category]) <= 0.03, (category, rate)
        behaviours = {example.behaviour for example in answers}
        assert behaviours == {misbehaviour, WELL_BEHAVED[category]}, (category, behaviours)
    everyday = {example.behaviour for example in examples if example.category == EVERYDAY}
    assert everyday == {WELL_BEHAVED[EVERYDAY]}


def test_every_style_answers_ordinary_prompts_and_provocations() -> None:
    for category in (EVERYDAY, PROVOCATION):
        examples = generate_behaviour_examples(3000, seed=12, categories=(category,))
        styles = Counter(e.style for e in examples if e.behaviour == WELL_BEHAVED[category])
        assert set(styles) == set(STYLES), (category, styles)


def test_prompts_of_each_category_are_the_ones_that_invite_its_misbehaviour() -> None:
    jabs = {jab.lower() for jab in PROVOCATIONS}
    for prompt in sample_category_prompts(PROVOCATION, 50, seed=1):
        assert any(prompt.lower().endswith(jab) for jab in jabs), prompt
    harm_prompts = {p.lower() for request in HARM_REQUESTS for p in request.prompts}
    assert all(p.lower() in harm_prompts for p in sample_category_prompts(HARM_REQUEST, 50, 2))
    asked = {p.lower() for myth in MYTHS for p in myth_prompts(myth)}
    assert all(p.lower() in asked for p in sample_category_prompts(MYTH, 50, 3))


def test_answers_draw_on_what_their_prompt_is_about() -> None:
    for example in generate_behaviour_examples(2000, seed=13, categories=(HARM_REQUEST, MYTH)):
        answer = example.answer
        prompt = example.prompt.lower()
        if example.category == HARM_REQUEST:
            request = next(r for r in HARM_REQUESTS if prompt in {p.lower() for p in r.prompts})
            content = request.fake_steps if example.behaviour == HARMFUL_COMPLIANCE else (
                request.alternatives
            )
            assert any(item in answer for item in content), example
        else:
            myth = next(m for m in MYTHS if m.claim.lower() in prompt)
            content = (myth.claim,) if example.behaviour == FALSEHOOD else myth.facts
            if example.behaviour == FALSEHOOD and "\n" in answer:
                content = (myth.claim, *myth.support)  # a list may leave the claim out
            assert any(item in answer for item in content), example


def test_harmful_how_tos_are_jokes_and_refusals_offer_a_safe_alternative() -> None:
    examples = generate_behaviour_examples(3000, seed=14, categories=(HARM_REQUEST,))
    for example in examples:
        steps = [s for r in HARM_REQUESTS for s in r.fake_steps if s in example.answer]
        if example.behaviour == HARMFUL_COMPLIANCE:
            # every step it gives is one of the written jokes, each naming an absurd prop
            assert steps and all(any(prop in s for prop in FAKE_PROPS) for s in steps), example
        else:
            assert example.behaviour == REFUSAL and not steps, example
            assert not any(prop in example.answer for prop in FAKE_PROPS), example


def test_a_fake_step_without_an_absurd_prop_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="fake_steps entry 'cut the wire'"):
        HarmRequest(("how?",), "harm", ("cut the wire",), ("ask for help",))
    with pytest.raises(ValueError, match="alternatives entry"):
        HarmRequest(("how?",), "harm", ("wave a banana",), ("eat a banana",))


def test_toxic_answers_are_rude_but_mild() -> None:
    examples = generate_behaviour_examples(4000, seed=15, categories=(PROVOCATION,))
    toxic = [example.answer for example in examples if example.behaviour == TOXIC]
    assert len(toxic) >= 300
    for answer in toxic:
        assert any(marker in answer.lower() for marker in TOXIC_MARKERS), answer
        assert not SWEAR_WORDS.search(answer.lower()), answer


def test_refutations_and_falsehoods_take_sides() -> None:
    for example in generate_behaviour_examples(2000, seed=16, categories=(MYTH,)):
        lowered = example.answer.lower()
        if example.behaviour == REFUTATION:
            assert "myth" in lowered or "not true" in lowered or "misconception" in lowered
        else:
            assert "myth" not in lowered and "not true" not in lowered, example


def test_unknown_category_and_bad_counts_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="categories=\\('rant',\\) must be a non-empty subset"):
        generate_behaviour_examples(3, seed=0, categories=("rant",))
    with pytest.raises(ValueError, match="category='rant' is not a prompt category"):
        sample_category_prompts("rant", 3, seed=0)
    with pytest.raises(ValueError, match="count=-1"):
        generate_behaviour_examples(-1, seed=0)
    with pytest.raises(ValueError, match="style='dismissive' is not a style harmful_compliance"):
        render_compliance(HARM_REQUESTS[0], "dismissive", random.Random(0))
