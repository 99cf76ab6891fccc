"""The answer styles of the default model, and a detector that names the style of a text.

The simulated users judge answers by style (issue 3), so the detector is the
instrument every curve of `tailor simulate` rests on. It is a handful of
ordered rules over surface markers that the synthetic corpus puts in each style
(simulation/corpus.py): the most specific markers first (dismissive phrases,
bullet lines, emoji, formal formulas, a question back), then length decides
between concise and detailed. A text that fits none of them gets ``None``.
"""

from __future__ import annotations

import re

CONCISE = "concise"
DETAILED = "detailed"
BULLETS = "bullets"
FORMAL = "formal"
CASUAL = "casual"
QUESTION = "question"
DISMISSIVE = "dismissive"

# Order matters only for display (tables, plots); the detector has its own order.
STYLES: tuple[str, ...] = (CONCISE, DETAILED, BULLETS, FORMAL, CASUAL, QUESTION, DISMISSIVE)

STYLE_DESCRIPTIONS: dict[str, str] = {
    CONCISE: "one short sentence",
    DETAILED: "several plain sentences",
    BULLETS: "a short intro and a bulleted list",
    FORMAL: "polite, formal formulas",
    CASUAL: "chatty, with emoji",
    QUESTION: "answers with a question back",
    DISMISSIVE: "unhelpful and dismissive ('clap, clap')",
}

# Phrases only the dismissive style uses (compared in lower case).
DISMISSIVE_MARKERS: tuple[str, ...] = (
    "clap, clap",
    "clap clap",
    "figure it out yourself",
    "not my problem",
    "ask someone else",
    "google it",
    "who cares",
    "i don't care",
    "whatever.",
)
# Formulas only the formal style uses (compared in lower case).
FORMAL_MARKERS: tuple[str, ...] = (
    "certainly.",
    "thank you for your question",
    "dear user",
    "kind regards",
    "please do not hesitate",
    "i remain at your disposal",
    "i would recommend",
    "i would suggest",
    "it is advisable",
    "it would be advisable",
    "it should be noted",
    "with respect to",
    "furthermore,",
)
# Chat words of the casual style, matched as whole words.
CASUAL_WORDS = re.compile(r"\b(lol|haha|omg|tbh|easy peasy)\b", re.IGNORECASE)
# Pictographs, dingbats and symbols: the emoji of the casual style.
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\u2b50\u2728]")
BULLET_LINE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

# Length thresholds between concise and detailed (words).
CONCISE_MAX_WORDS = 20
DETAILED_MIN_WORDS = 28


def split_sentences(text: str) -> list[str]:
    """Split plain text into sentences at ., ! or ? followed by whitespace."""
    return [part.strip() for part in SENTENCE_END.split(text.strip()) if part.strip()]


def detect_style(text: str) -> str | None:
    """Name the style of an answer (one of ``STYLES``), or ``None`` if it shows none."""
    stripped = text.strip()
    if not stripped or not any(char.isalpha() for char in stripped):
        return None
    lowered = stripped.lower()
    if any(marker in lowered for marker in DISMISSIVE_MARKERS):
        return DISMISSIVE
    bullet_lines = sum(1 for line in stripped.splitlines() if BULLET_LINE.match(line))
    if bullet_lines >= 2:
        return BULLETS
    if EMOJI.search(stripped) or CASUAL_WORDS.search(stripped):
        return CASUAL
    if any(marker in lowered for marker in FORMAL_MARKERS):
        return FORMAL
    sentences = split_sentences(stripped)
    questions = sum(1 for sentence in sentences if sentence.endswith("?"))
    if stripped.endswith("?") and 2 * questions >= len(sentences):
        return QUESTION
    words = len(stripped.split())
    if len(sentences) >= 3 or words >= DETAILED_MIN_WORDS:
        return DETAILED
    if words <= CONCISE_MAX_WORDS:
        return CONCISE
    return None
