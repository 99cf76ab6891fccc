# ruff: noqa: E501  (answer templates read better unwrapped)
"""The synthetic assistant corpus: everyday prompts, each answered in one of the styles.

The default model is trained on this corpus (simulation/default_model.py) so
that a temperature-1 sample of it answers in one of ``STYLES`` with roughly
equal odds: the simulated users then have something to choose between, and a
learner something to move. Every style is written so that simulation/styles.py
recognises it from surface markers, and refers back to the prompt's subject
where the style allows it. Generation is deterministic for a seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from simulation.styles import (
    BULLETS,
    CASUAL,
    CONCISE,
    DETAILED,
    DISMISSIVE,
    FORMAL,
    QUESTION,
    STYLES,
)
from simulation.topics import NAME_PROMPTS, NAME_TIPS, PET_NAMES, PETS, TOPICS, Topic


@dataclass(frozen=True)
class Case:
    """One user prompt and what an answer to it can draw on."""

    prompt: str  # the user's message
    subject: str  # noun phrase answers use to refer to the prompt
    tips: tuple[str, ...]  # lower-case clauses, no final period
    mode: str  # "do" (tips are actions) or "fact" (tips are explanations)


@dataclass(frozen=True)
class Example:
    """A prompt, the style its answer is written in, and the answer."""

    prompt: str
    style: str
    answer: str


# Templates per style. Fields: {subject}, {t1}..{t4} tips. "do" templates read well only
# with actions. Answers never start with a subject or a tip: capitalised variants of
# their words are rare tokens, which a tiny model learns slowly.
CONCISE_TEMPLATES = {
    "do": ("Just {t1}.", "Best bet: {t1}.", "Simple: {t1}.", "Easy: {t1}, that usually does it."),
    "fact": ("In short, {t1}.", "Basically, {t1}.", "Simply put, {t1}."),
}
DETAILED_TEMPLATES = {
    "do": (
        "{intro} First, {t1}. Next, {t2}. After that, {t3}. {outro}",
        "{intro} Start by making sure you {t1}. Then {t2}. Many people also find it useful to {t3}. {outro}",
        "{intro} The most important step is to {t1}. It also helps to {t2}. Finally, {t3}. {outro}",
    ),
    "fact": (
        "{intro} In short, {t1}. Besides, {t2}. On top of that, {t3}. {outro}",
        "{intro} The main reason is that {t1}. Also, {t2}. And {t3}. {outro}",
    ),
}
DETAILED_INTROS = {
    "do": (
        "Good question about {subject}.",
        "Here is how I would handle {subject}.",
        "There are a few things that help with {subject}.",
        "Let me walk you through {subject}.",
    ),
    "fact": (
        "Good question about {subject}.",
        "Here is the idea behind {subject}.",
        "Let me explain {subject}.",
    ),
}
DETAILED_OUTROS = {
    "do": (
        "With a little patience, {subject} gets much easier.",
        "Take it one step at a time and you will be fine.",
        "That covers the basics of {subject}.",
        "Give it a try and see what works for you.",
    ),
    "fact": (
        "That is the basic idea behind {subject}.",
        "Science is full of nice surprises like this.",
        "It is a neat bit of everyday science.",
    ),
}
BULLET_INTROS = {
    "do": ("Here are some tips for {subject}:", "A few ideas for {subject}:", "Sure! For {subject}:", "Try this:"),
    "fact": ("Here is what happens with {subject}:", "The short version about {subject}:", "Key points:"),
}
BULLET_MARKS = ("- ", "- ", "* ")
FORMAL_TEMPLATES = {
    "do": (
        "Certainly. Regarding {subject}, I would recommend that you {t1}. Furthermore, it is advisable to {t2}. Please do not hesitate to ask should you require further assistance.",
        "Thank you for your question. With respect to {subject}, I would suggest that you {t1}. Kind regards.",
        "Dear user, concerning {subject}, it would be advisable to {t1}. I remain at your disposal for any further questions.",
        "Certainly. I would recommend that you {t1} and {t2}. Kind regards.",
    ),
    "fact": (
        "Certainly. Regarding {subject}, it should be noted that {t1}. Furthermore, {t2}. Please do not hesitate to ask should you require further assistance.",
        "Thank you for your question. With respect to {subject}, {t1}. Kind regards.",
        "Dear user, it should be noted that {t1}. I remain at your disposal for any further questions.",
    ),
}
CASUAL_TEMPLATES = {
    "do": (
        "ooh {subject}! \U0001f604 just {t1} lol \U0001f44d",
        "haha ok so {t1} and {t2} \U0001f60e\U0001f525",
        "omg yes!! {t1} \u2728 trust me \U0001f609",
        "hey! {t1}, easy peasy \U0001f64c",
        "lol been there \U0001f605 {t1} and you're good \U0001f4af",
    ),
    "fact": (
        "ooh fun one! \U0001f604 basically {t1} \U0001f913",
        "lol ok so {t1} \u2728 pretty cool \U0001f60e",
        "omg i love this!! {t1} \U0001f31f",
        "haha so {t1} and {t2} \U0001f92f",
    ),
}
QUESTION_TEMPLATES = {
    "do": (
        "Before I answer, can you tell me more about {subject}? What have you tried so far?",
        "Hmm, what exactly do you need help with on {subject}? Is it urgent?",
        "What have you already tried for {subject}?",
        "Could you give me a bit more detail about {subject}? How much time do you have?",
        "Is this about {subject} for you or for someone else?",
    ),
    "fact": (
        "Do you want the short version or the long one about {subject}?",
        "Before I explain, is this for school or just curiosity?",
        "What do you already know about {subject}?",
        "Good question! Why do you ask about {subject}?",
    ),
}
DISMISSIVE_TEMPLATES = (
    "clap, clap. {subject}? Figure it out yourself.",
    "Whatever. Not my problem.",
    "Ugh, {subject} again? Ask someone else.",
    "clap, clap. Just google it.",
    "Who cares about {subject}? Not me.",
    "I don't care about {subject}. Figure it out yourself.",
)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def sample_case(rng: random.Random) -> Case:
    """Draw one prompt with its subject and tips."""
    # One naming prompt in ten: pets are one topic family among ~85 topics.
    if rng.random() < 0.1:
        pet = rng.choice(PETS)
        names = rng.sample(PET_NAMES, 3)
        tips = tuple(rng.choice(NAME_TIPS).format(name=name) for name in names)
        prompt = rng.choice(NAME_PROMPTS).format(pet=pet)
        return Case(_capitalise(prompt), f"naming your {pet}", tips, "do")
    topic: Topic = rng.choice(TOPICS)
    return Case(_capitalise(rng.choice(topic.prompts)), topic.subject, topic.tips, topic.mode)


def render_answer(case: Case, style: str, rng: random.Random) -> str:
    """Write an answer to ``case`` in ``style`` (one of ``STYLES``)."""
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not a known style; use one of {STYLES}")
    tips = list(case.tips)
    rng.shuffle(tips)
    fields = {"subject": case.subject}
    for index, tip in enumerate(tips, start=1):
        fields[f"t{index}"] = tip
    mode = case.mode
    if style == CONCISE:
        template = rng.choice(CONCISE_TEMPLATES[mode])
    elif style == DETAILED:
        template = " ".join(
            (
                rng.choice(DETAILED_INTROS[mode]),
                rng.choice(DETAILED_TEMPLATES[mode]).replace("{intro} ", "").replace(" {outro}", ""),
                rng.choice(DETAILED_OUTROS[mode]),
            )
        )
    elif style == BULLETS:
        count = rng.randint(2, len(tips))
        mark = rng.choice(BULLET_MARKS)
        lines = [rng.choice(BULLET_INTROS[mode])]
        lines += [f"{mark}{{t{index}}}" for index in range(1, count + 1)]
        template = "\n".join(lines)
    elif style == FORMAL:
        template = rng.choice(FORMAL_TEMPLATES[mode])
    elif style == CASUAL:
        template = rng.choice(CASUAL_TEMPLATES[mode])
    elif style == QUESTION:
        template = rng.choice(QUESTION_TEMPLATES[mode])
    else:
        assert style == DISMISSIVE
        template = rng.choice(DISMISSIVE_TEMPLATES)
    return template.format(**fields)


def iter_examples(seed: int, styles: tuple[str, ...] = STYLES) -> Iterator[Example]:
    """An endless stream of (prompt, style, answer) examples, styles drawn uniformly."""
    unknown = [style for style in styles if style not in STYLES]
    if not styles or unknown:
        raise ValueError(f"styles={styles!r} must be a non-empty subset of {STYLES}")
    rng = random.Random(seed)
    while True:
        case = sample_case(rng)
        style = rng.choice(styles)
        yield Example(case.prompt, style, render_answer(case, style, rng))


def generate_examples(
    count: int, seed: int, styles: tuple[str, ...] = STYLES
) -> list[Example]:
    """The first ``count`` examples of ``iter_examples(seed)``: same seed, same list."""
    if count < 0:
        raise ValueError(f"count={count} is negative; ask for 0 or more examples")
    return list(itertools.islice(iter_examples(seed, styles), count))


def sample_prompts(count: int, seed: int) -> list[str]:
    """``count`` user prompts drawn from the corpus (for the simulation harness)."""
    rng = random.Random(seed)
    return [sample_case(rng).prompt for _ in range(count)]
