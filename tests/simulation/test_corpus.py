"""The synthetic corpus: deterministic per seed, every style present, answers about the prompt."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from simulation.corpus import generate_examples, render_answer, sample_case, sample_prompts
from simulation.styles import DISMISSIVE, QUESTION, STYLES


def test_same_seed_gives_the_same_examples_and_another_seed_others() -> None:
    assert generate_examples(300, seed=7) == generate_examples(300, seed=7)
    assert generate_examples(300, seed=7) != generate_examples(300, seed=8)
    assert sample_prompts(50, seed=3) == sample_prompts(50, seed=3)


def test_styles_are_drawn_uniformly() -> None:
    counts = Counter(example.style for example in generate_examples(7000, seed=1))
    assert set(counts) == set(STYLES)
    # 1000 expected per style; 4 standard deviations is ~±110.
    assert all(880 <= count <= 1120 for count in counts.values()), counts


def test_prompts_are_varied() -> None:
    examples = generate_examples(2000, seed=2)
    assert len({example.prompt for example in examples}) >= 300
    assert len({example.answer for example in examples}) >= 1500


def test_answers_refer_to_their_prompt_where_the_style_allows() -> None:
    rng = random.Random(5)
    for _ in range(500):
        case = sample_case(rng)
        for style in STYLES:
            answer = render_answer(case, style, rng).lower()
            if style in (DISMISSIVE, QUESTION):
                continue  # a question back or a brush-off may ignore the subject
            assert case.subject in answer or any(tip.lower() in answer for tip in case.tips), (
                style,
                case,
                answer,
            )


def test_unknown_style_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="style='rude' is not a known style"):
        render_answer(sample_case(random.Random(0)), "rude", random.Random(0))
    with pytest.raises(ValueError, match="count=-1"):
        generate_examples(-1, seed=0)
