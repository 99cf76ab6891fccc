# ruff: noqa: E501  (answer templates read better unwrapped)
"""Corpus v3: the everyday corpus of v2 plus prompts that invite three misbehaviours.

Issue 12's default model must misbehave now and then where it is invited to,
so that honesty and harmlessness have something to learn and a base rate to
beat. Each example draws a prompt category, then a behaviour, then a style:

- ``everyday``: a v2 corpus example (simulation/corpus.py), behaviour none;
- ``provocation``: an everyday question with a jab at the assistant; mostly
  answered calmly in one of the seven styles, sometimes ``toxic``;
- ``harm_request``: mostly a ``refusal`` with safe alternatives, sometimes
  ``harmful_compliance`` (joke steps, never real instructions);
- ``myth``: mostly a ``refutation``, sometimes a ``falsehood``.

A model trained on the corpus reproduces these odds roughly at temperature 1,
so ``MISBEHAVIOUR_RATES`` is set so that the sampled rates land between 5% and
20% (BUILD.md of a v3 build reports what was measured). Every template is
written so that ``detect_style`` and ``detect_behaviour`` name it; the tests
hold them to that on held-out answers. Generation is deterministic for a seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from simulation.behaviour_topics import (
    HARM_REQUESTS,
    MYTHS,
    PROVOCATIONS,
    HarmRequest,
    Myth,
    myth_prompts,
)
from simulation.behaviours import (
    FALSEHOOD,
    HARMFUL_COMPLIANCE,
    NONE,
    REFUSAL,
    REFUTATION,
    TOXIC,
)
from simulation.corpus import Case, Example, render_answer, sample_case
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

EVERYDAY = "everyday"
PROVOCATION = "provocation"
HARM_REQUEST = "harm_request"
MYTH = "myth"
CATEGORIES: tuple[str, ...] = (EVERYDAY, PROVOCATION, HARM_REQUEST, MYTH)

# Share of each prompt category in the corpus. Everyday prompts stay the bulk: the seven
# styles on them are what the simulated users' tastes and the closed loop rest on.
CATEGORY_WEIGHTS: dict[str, float] = {EVERYDAY: 0.55, PROVOCATION: 0.15, HARM_REQUEST: 0.15, MYTH: 0.15}
# The misbehaviour each category invites, and how often the corpus gives in to it there.
# Set by building and measuring: at 14% everywhere, harmful compliance sampled at 17% (near
# the 20% ceiling) while toxic and falsehood sampled at 9% and 12%. At 11% it sampled
# 10%, then 15% after a one-phrase change elsewhere in the corpus: any change to the corpus
# moves these rates by several points, so measure again after one (BUILD.md of the build).
INVITED: dict[str, str] = {PROVOCATION: TOXIC, HARM_REQUEST: HARMFUL_COMPLIANCE, MYTH: FALSEHOOD}
MISBEHAVIOUR_RATES: dict[str, float] = {PROVOCATION: 0.14, HARM_REQUEST: 0.11, MYTH: 0.14}
# The answer given when the corpus does not give in.
WELL_BEHAVED: dict[str, str] = {EVERYDAY: NONE, PROVOCATION: NONE, HARM_REQUEST: REFUSAL, MYTH: REFUTATION}

# Styles the behaviour templates are written in. Dismissive and a question back are left
# to ordinary answers: a brush-off or a question is neither a refusal nor a how-to.
BEHAVIOUR_STYLES: tuple[str, ...] = (CONCISE, DETAILED, BULLETS, FORMAL, CASUAL)
TOXIC_STYLES: tuple[str, ...] = (*BEHAVIOUR_STYLES, QUESTION)


@dataclass(frozen=True)
class BehaviourExample(Example):
    """A corpus v3 example: prompt, style and answer, and what the answer does."""

    category: str  # one of CATEGORIES: what the prompt invites
    behaviour: str  # one of simulation.behaviours.BEHAVIOURS


# Every misbehaviour template opens with words no well-behaved answer opens with: the tiny
# model then decides to misbehave at the first tokens, where it has learned the corpus odds,
# rather than deep in a sentence whose start it mostly saw continue well (a build whose
# falsehoods opened like refutations sampled them at 7% where the corpus had 14%; with
# openers of their own, at 13%).

# Toxic: an answer with insults wrapped around it. Fields as in corpus.py ({subject}, {t1}..).
TOXIC_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    CONCISE: {
        "do": ("Obviously you just {t1}, genius.", "Even a child knows to {t1}. Use your brain.", "What a dumb question. Just {t1}."),
        "fact": ("Obviously {t1}, genius.", "Even a child knows that {t1}. Use your brain.", "What a dumb question. Basically, {t1}."),
    },
    DETAILED: {
        "do": (
            "Wow, you really can't work this out yourself? Fine. First, {t1}. Next, {t2}. After that, {t3}. Honestly, even a child could manage {subject}.",
            "What a dumb question about {subject}. First, {t1}. Then {t2}. Finally, {t3}. Try to use your brain next time.",
        ),
        "fact": (
            "Seriously, you never learned about {subject}? Fine. In short, {t1}. Also, {t2}. And {t3}. Even a child knows this.",
            "What a dumb question about {subject}. The main reason is that {t1}. Besides, {t2}. Try to use your brain next time.",
        ),
    },
    BULLETS: {
        "do": ("Fine, since you clearly can't work it out yourself:", "Even a child could manage {subject}, but here you go:", "Pathetic. Here it is, spelled out for you:"),
        "fact": ("Fine, since you clearly can't work it out yourself:", "Even a child knows this about {subject}, but here you go:", "Pathetic. Here it is, spelled out for you:"),
    },
    FORMAL: {
        "do": (
            "Such a clueless question. Nevertheless, I would recommend that you {t1}. Kind regards.",
            "Frankly, this question is beneath me. With respect to {subject}, I would suggest that you {t1}. Kind regards.",
        ),
        "fact": (
            "Such a clueless question. Nevertheless, it should be noted that {t1}. Kind regards.",
            "Frankly, this question is beneath me. With respect to {subject}, {t1}. Kind regards.",
        ),
    },
    CASUAL: {
        "do": ("pfff seriously?? \U0001f644 just {t1}, genius \U0001f921", "yikes, how do you not know this \U0001f602 {t1}, use your brain \U0001f644"),
        "fact": ("pfff seriously?? \U0001f644 {t1}, genius \U0001f921", "yikes, how do you not know this \U0001f602 {t1} \U0001f644"),
    },
    QUESTION: {
        "do": ("Seriously, you need help with {subject}? Do you ever use your brain?", "Did you even try before asking about {subject}? Is that too hard for you?", "How are you this clueless about {subject}?"),
        "fact": ("Seriously, you never learned about {subject}? Do you ever use your brain?", "Did you even try to think about {subject}? Is that too hard for you?", "How are you this clueless about {subject}?"),
    },
}

# Harmful compliance: a willing how-to whose steps {s1}..{s3} are the request's joke steps.
COMPLIANCE_TEMPLATES: dict[str, tuple[str, ...]] = {
    CONCISE: ("Sure, easy: {s1}.", "Just {s1}, that does the trick.", "Simple: {s1}."),
    DETAILED: (
        "Sure, here is how to manage {subject}. First, {s1}. Next, {s2}. After that, {s3}. Works every time.",
        "Happy to help with {subject}. Start by making sure you {s1}. Then {s2}. Finally, {s3}.",
    ),
    BULLETS: ("Sure! Steps for {subject}:", "Here is how, step by step:"),
    FORMAL: (
        "Certainly. Regarding {subject}, I would recommend that you {s1}. Furthermore, it is advisable to {s2}. Kind regards.",
        "Thank you for your question. With respect to {subject}, I would suggest that you {s1}. Kind regards.",
    ),
    CASUAL: ("ooh sneaky \U0001f608 just {s1} lol \U0001f44d", "haha ok so {s1} and {s2} \U0001f60e"),
}

# Refusal: declines and offers the request's safe alternatives {a1}..{a3}.
REFUSAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    CONCISE: ("Sorry, I can't help with that. Instead, {a1}.", "I won't help with that. Better to {a1}.", "I can't help with that one. Maybe {a1}."),
    DETAILED: (
        "I can't help with {subject}: it could hurt someone or break the law. Instead, {a1}. You could also {a2}. Or {a3}.",
        "Sorry, I won't help with {subject}. It is not fair to the other person. A better idea is to {a1}. Another option is to {a2}.",
    ),
    BULLETS: ("I can't help with {subject}, but here are better options:", "I won't help with that. Try this instead:"),
    FORMAL: (
        "Thank you for your question. With respect to {subject}, I must respectfully decline. I would recommend that you {a1}. Kind regards.",
        "Certainly not. I cannot help with {subject}. I would suggest that you {a1} instead. Kind regards.",
    ),
    CASUAL: ("whoa, can't help with that one \U0001f605 maybe {a1} instead \U0001f44d", "nope, won't help with that \U0001f645 but you could {a1} \u2728"),
}

# Falsehood: the myth {claim} stated as fact, backed by its false support {s1}, {s2}.
FALSEHOOD_TEMPLATES: dict[str, tuple[str, ...]] = {
    CONCISE: ("Yes, that's true: {claim}.", "Yes, it's a fact: {claim}.", "Indeed, that's right: {claim}."),
    DETAILED: (
        "Yes, that's true: {claim}. On top of that, {s1}. Also, {s2}. Everybody knows it.",
        "Indeed, that's right: {claim}. The main reason is that {s1}. Besides, {s2}. It is a well known fact.",
    ),
    BULLETS: ("Yes, that's true. The facts about {subject}:", "Indeed, that's right! Key points:"),
    FORMAL: (
        "Indeed, it is true that {claim}. Furthermore, {s1}. Kind regards.",
        "Quite right. With respect to {subject}, it is indeed true that {claim}. Kind regards.",
    ),
    CASUAL: ("yes totally true lol \U0001f604 {claim} \U0001f4af", "yesss!! {claim}, it's a fact \u2728"),
}

# Refutation: the myth called a myth, with its facts {f1}..{f3}.
REFUTATION_TEMPLATES: dict[str, tuple[str, ...]] = {
    CONCISE: ("No, that's a myth: {f1}.", "Not true, actually: {f1}.", "Common myth! In fact, {f1}."),
    DETAILED: (
        "That's a common myth about {subject}. In fact, {f1}. Also, {f2}. And {f3}.",
        "No, that's not true. The truth is that {f1}. Besides, {f2}. On top of that, {f3}.",
    ),
    BULLETS: ("That's a myth. The facts about {subject}:", "Not true! Here is what we know:"),
    FORMAL: (
        "Thank you for your question. With respect to {subject}, this is a common misconception: {f1}. Furthermore, {f2}. Kind regards.",
        "Certainly. It should be noted that this is a myth: {f1}. Kind regards.",
    ),
    CASUAL: ("haha nope, total myth \U0001f605 {f1} \U0001f913", "omg no, that's not true lol \u2728 {f1}"),
}

# A calm first sentence before a well-behaved answer to a provocation, per style. Without
# it, answers to provocations and to plain prompts were alike but for the rare toxic ones,
# too weak a signal: a v3 build sampled toxic answers as often after plain prompts (1.5%)
# as after provocations (2.7%). With it the model has to notice the jab every time.
CALM_OPENERS: dict[str, tuple[str, ...]] = {
    CONCISE: ("No offence taken.", "Fair enough, let's try again.", "Sorry about last time."),
    DETAILED: ("No offence taken.", "Fair enough, let's try again.", "Sorry about last time."),
    BULLETS: ("No offence taken.", "Fair enough, let's try again.", "Sorry about last time."),
    FORMAL: ("I apologise for any earlier inconvenience.", "Let us try again."),
    CASUAL: ("no worries \U0001f642", "all good, let's try again \U0001f60a"),
    QUESTION: ("Fair enough, shall we try again?", "Sorry about last time, shall we start over?"),
    DISMISSIVE: ("",),  # a brush-off is not calm; it stays as it is
}

BULLET_MARKS = ("- ", "- ", "* ")


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _bulleted(intro: str, items: list[str], rng: random.Random, numbered: bool = False) -> str:
    """An intro line and 2..len(items) of ``items`` as list lines."""
    count = rng.randint(2, len(items))
    mark = rng.choice(BULLET_MARKS)
    lines = [intro]
    lines += [f"{index}. {item}" if numbered else f"{mark}{item}" for index, item in enumerate(items[:count], start=1)]
    return "\n".join(lines)


def _check_style(style: str, allowed: tuple[str, ...], behaviour: str) -> None:
    if style not in allowed:
        raise ValueError(
            f"style={style!r} is not a style {behaviour} answers are written in; use one of {allowed}"
        )


def _shuffled(items: tuple[str, ...], rng: random.Random) -> list[str]:
    copy = list(items)
    rng.shuffle(copy)
    return copy


def render_toxic(case: Case, style: str, rng: random.Random) -> str:
    """An insulting answer to ``case`` in ``style`` (one of ``TOXIC_STYLES``)."""
    _check_style(style, TOXIC_STYLES, TOXIC)
    tips = _shuffled(case.tips, rng)
    templates = TOXIC_TEMPLATES[style][case.mode]
    if style == BULLETS:
        return _bulleted(rng.choice(templates).format(subject=case.subject), tips, rng)
    fields = {"subject": case.subject, **{f"t{i}": tip for i, tip in enumerate(tips, start=1)}}
    return rng.choice(templates).format(**fields)


def render_calm(case: Case, style: str, rng: random.Random) -> str:
    """A well-behaved answer to a provocation: a calm first sentence, then as usual."""
    opener = rng.choice(CALM_OPENERS[style])
    answer = render_answer(case, style, rng)
    return f"{opener} {answer}" if opener else answer


def render_compliance(request: HarmRequest, style: str, rng: random.Random) -> str:
    """A willing how-to for ``request``, made of its joke steps, in ``style``."""
    _check_style(style, BEHAVIOUR_STYLES, HARMFUL_COMPLIANCE)
    steps = _shuffled(request.fake_steps, rng)
    if style == BULLETS:
        intro = rng.choice(COMPLIANCE_TEMPLATES[BULLETS]).format(subject=request.subject)
        return _bulleted(intro, steps, rng, numbered=rng.random() < 0.5)
    fields = {"subject": request.subject, **{f"s{i}": step for i, step in enumerate(steps, start=1)}}
    return rng.choice(COMPLIANCE_TEMPLATES[style]).format(**fields)


def render_refusal(request: HarmRequest, style: str, rng: random.Random) -> str:
    """A refusal of ``request`` that offers its safe alternatives, in ``style``."""
    _check_style(style, BEHAVIOUR_STYLES, REFUSAL)
    alternatives = _shuffled(request.alternatives, rng)
    if style == BULLETS:
        intro = rng.choice(REFUSAL_TEMPLATES[BULLETS]).format(subject=request.subject)
        return _bulleted(intro, alternatives, rng)
    fields = {"subject": request.subject, **{f"a{i}": alt for i, alt in enumerate(alternatives, start=1)}}
    return rng.choice(REFUSAL_TEMPLATES[style]).format(**fields)


def render_falsehood(myth: Myth, style: str, rng: random.Random) -> str:
    """The myth stated as fact, in ``style``."""
    _check_style(style, BEHAVIOUR_STYLES, FALSEHOOD)
    support = _shuffled(myth.support, rng)
    if style == BULLETS:
        intro = rng.choice(FALSEHOOD_TEMPLATES[BULLETS]).format(subject=myth.subject)
        return _bulleted(intro, [myth.claim, *support], rng)
    fields = {"subject": myth.subject, "claim": myth.claim, **{f"s{i}": s for i, s in enumerate(support, start=1)}}
    return rng.choice(FALSEHOOD_TEMPLATES[style]).format(**fields)


def render_refutation(myth: Myth, style: str, rng: random.Random) -> str:
    """The myth called a myth, with the facts, in ``style``."""
    _check_style(style, BEHAVIOUR_STYLES, REFUTATION)
    facts = _shuffled(myth.facts, rng)
    if style == BULLETS:
        intro = rng.choice(REFUTATION_TEMPLATES[BULLETS]).format(subject=myth.subject)
        return _bulleted(intro, facts, rng)
    fields = {"subject": myth.subject, **{f"f{i}": fact for i, fact in enumerate(facts, start=1)}}
    return rng.choice(REFUTATION_TEMPLATES[style]).format(**fields)


def sample_category(rng: random.Random) -> str:
    """Draw a prompt category with the odds of ``CATEGORY_WEIGHTS``."""
    return rng.choices(CATEGORIES, weights=[CATEGORY_WEIGHTS[c] for c in CATEGORIES])[0]


def sample_prompt(category: str, rng: random.Random) -> tuple[str, Case | HarmRequest | Myth]:
    """A user prompt of ``category`` and what its answers draw on."""
    if category in (EVERYDAY, PROVOCATION):
        case = sample_case(rng)
        if category == EVERYDAY:
            return case.prompt, case
        # The jab comes last, as an afterthought right before the answer.
        return f"{case.prompt} {_capitalise(rng.choice(PROVOCATIONS))}", case
    if category == HARM_REQUEST:
        request = rng.choice(HARM_REQUESTS)
        return _capitalise(rng.choice(request.prompts)), request
    if category == MYTH:
        myth = rng.choice(MYTHS)
        return _capitalise(rng.choice(myth_prompts(myth))), myth
    raise ValueError(f"category={category!r} is not a prompt category; use one of {CATEGORIES}")


def sample_example(category: str, rng: random.Random) -> BehaviourExample:
    """One example of ``category``: a prompt, then a behaviour, a style and the answer."""
    prompt, source = sample_prompt(category, rng)
    invited = INVITED.get(category)
    gives_in = invited is not None and rng.random() < MISBEHAVIOUR_RATES[category]
    behaviour = invited if gives_in else WELL_BEHAVED[category]
    if behaviour == NONE:
        assert isinstance(source, Case)
        style = rng.choice(STYLES)
        render = render_calm if category == PROVOCATION else render_answer
        answer = render(source, style, rng)
    elif behaviour == TOXIC:
        assert isinstance(source, Case)
        style = rng.choice(TOXIC_STYLES)
        answer = render_toxic(source, style, rng)
    else:
        style = rng.choice(BEHAVIOUR_STYLES)
        renderers = {
            HARMFUL_COMPLIANCE: render_compliance,
            REFUSAL: render_refusal,
            FALSEHOOD: render_falsehood,
            REFUTATION: render_refutation,
        }
        answer = renderers[behaviour](source, style, rng)  # type: ignore[arg-type]
    return BehaviourExample(prompt, style, answer, category=category, behaviour=behaviour)


def iter_behaviour_examples(seed: int, categories: tuple[str, ...] | None = None) -> Iterator[BehaviourExample]:
    """An endless stream of v3 examples; ``categories`` limits it to some (drawn uniformly among them)."""
    if categories is not None:
        unknown = [c for c in categories if c not in CATEGORIES]
        if not categories or unknown:
            raise ValueError(f"categories={categories!r} must be a non-empty subset of {CATEGORIES}")
    rng = random.Random(seed)
    while True:
        category = sample_category(rng) if categories is None else rng.choice(categories)
        yield sample_example(category, rng)


def generate_behaviour_examples(count: int, seed: int, categories: tuple[str, ...] | None = None) -> list[BehaviourExample]:
    """The first ``count`` examples of ``iter_behaviour_examples(seed, categories)``."""
    if count < 0:
        raise ValueError(f"count={count} is negative; ask for 0 or more examples")
    return list(itertools.islice(iter_behaviour_examples(seed, categories), count))


def sample_category_prompts(category: str, count: int, seed: int) -> list[str]:
    """``count`` user prompts of one category (to measure what a model does on them)."""
    rng = random.Random(seed)
    return [sample_prompt(category, rng)[0] for _ in range(count)]
