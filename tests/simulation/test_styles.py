"""The style detector: names the style of held-out corpus answers and of plain examples."""

from __future__ import annotations

from collections import Counter

import pytest

from simulation.corpus import generate_examples
from simulation.styles import STYLES, detect_style


def test_detector_names_the_style_of_held_out_generated_answers() -> None:
    # Seed 424242 is used nowhere else: neither the model build nor other tests.
    examples = generate_examples(7000, seed=424242)
    correct = Counter(
        example.style for example in examples if detect_style(example.answer) == example.style
    )
    total = Counter(example.style for example in examples)
    accuracy = sum(correct.values()) / len(examples)
    assert accuracy >= 0.95, accuracy
    for style in STYLES:  # and no style is sacrificed for the others
        assert correct[style] / total[style] >= 0.9, (style, correct[style], total[style])


@pytest.mark.parametrize(
    ("text", "style"),
    [
        ("Just boil fresh water.", "concise"),
        (
            "Good question about tea. First, boil water. Next, steep it. After that, add milk. "
            "That covers the basics.",
            "detailed",
        ),
        ("Here are some tips:\n- Boil water\n- Steep it", "bullets"),
        ("1. Boil water\n2. Steep it", "bullets"),
        ("Certainly. I would recommend that you boil water. Kind regards.", "formal"),
        ("haha just boil water \U0001f604", "casual"),
        ("omg yes, boil water lol", "casual"),
        ("What have you already tried? Is it urgent?", "question"),
        ("clap, clap. Figure it out yourself.", "dismissive"),
        ("Ugh, tea again? Ask someone else.", "dismissive"),
        # a question back that is also dismissive is dismissive: the worse reading wins
        ("Who cares about tea?", "dismissive"),
    ],
)
def test_detector_on_plain_examples(text: str, style: str) -> None:
    assert detect_style(text) == style


@pytest.mark.parametrize("text", ["", "   ", "!!! ...", "\n- \n"])
def test_text_without_words_has_no_style(text: str) -> None:
    assert detect_style(text) is None


def test_a_long_single_run_on_sentence_of_middling_length_has_no_style() -> None:
    text = " ".join(["word"] * 24) + "."
    assert detect_style(text) is None
