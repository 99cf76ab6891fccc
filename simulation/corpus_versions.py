"""Which synthetic corpus a default-model build trains on, by version.

Version 2 is the everyday corpus of simulation/corpus.py, the one the shipped
model was built on; version 3 adds the prompts that invite misbehaviours
(simulation/behaviour_corpus.py, issue 12). The version is part of the build
config, so a v2 build draws exactly the examples it always drew and rewrites
the shipped weights bit for bit.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator

from simulation.behaviour_corpus import iter_behaviour_examples
from simulation.corpus import Example, iter_examples

CORPUS_VERSIONS: tuple[int, ...] = (2, 3)


def check_corpus_version(version: int) -> None:
    """Refuse a corpus version that does not exist, naming the ones that do."""
    if version not in CORPUS_VERSIONS:
        raise ValueError(f"corpus_version={version} is unknown; use one of {CORPUS_VERSIONS}")


def iter_corpus(version: int, seed: int) -> Iterator[Example]:
    """The endless example stream of corpus ``version`` for ``seed``."""
    check_corpus_version(version)
    if version == 2:
        return iter_examples(seed)
    return iter_behaviour_examples(seed)


def corpus_examples(version: int, count: int, seed: int) -> list[Example]:
    """The first ``count`` examples of ``iter_corpus(version, seed)``."""
    if count < 0:
        raise ValueError(f"count={count} is negative; ask for 0 or more examples")
    return list(itertools.islice(iter_corpus(version, seed), count))


def corpus_fingerprint(version: int, count: int = 2000, seed: int = 0) -> str:
    """sha256 of the first ``count`` examples: changes whenever the corpus text does.

    A v3 model's base rates move by several points with any change to the corpus, so
    its BUILD notes carry this, and a test says when they describe another corpus.
    """
    digest = hashlib.sha256()
    for example in corpus_examples(version, count, seed):
        digest.update(f"{example.prompt}\x00{example.answer}\x00".encode())
    return digest.hexdigest()
