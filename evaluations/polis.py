"""Polis open data as per-user thumbs, and the evaluation protocols of issue 5.

Polis participants vote agree (1), disagree (-1) or pass (0) on short statements
written by other participants. Agree is a thumbs-up on the text, disagree a
thumbs-down; passes and blanks carry no label and are dropped.

Folder layout (github.com/compdemocracy/openData): one sub-folder per
conversation holding

- ``comments.csv``: ``comment-id, ..., comment-body`` (other columns ignored);
- ``participants-votes.csv``: one row per participant; the first column is the
  participant id, and every column whose header is a comment id holds 1, -1, 0
  or blank.

Protocols (the README's reference figures use the first one):

- **seen texts** (`split_seen_texts`): every eligible user (≥ ``min_votes``
  non-pass votes) has ``floor(holdout_fraction · n)`` of their votes held out at
  random; training is every other vote of every participant, eligible or not.
  Held-out statements were voted on by others in training.
- **new texts** (`split_new_texts`): a random ``holdout_fraction`` of the
  statements is held out entirely; the test set is every eligible user's votes
  on them, training every vote on the other statements. This is what a learner
  faces with a fresh completion no one has judged.
- **cold start** (`cold_start`): a random subset of the eligible users keeps
  only ``n`` of its training votes; the rest of the training data is unchanged,
  and the test set is those users' held-out votes.
"""

from __future__ import annotations

import csv
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMMENTS_FILE = "comments.csv"
VOTES_FILE = "participants-votes.csv"


@dataclass(frozen=True)
class Conversation:
    """One Polis conversation: statements, participants and their labelled votes."""

    name: str  # folder name
    statement_ids: list[str]  # Polis comment ids, one per statement
    texts: list[str]  # statement bodies, aligned with statement_ids
    user_ids: list[str]  # Polis participant ids, one per participant
    vote_user: np.ndarray  # (V,) int64 index into user_ids
    vote_statement: np.ndarray  # (V,) int64 index into statement_ids
    vote_label: np.ndarray  # (V,) float32, 1 = agree (thumbs-up), 0 = disagree

    @property
    def num_votes(self) -> int:
        return int(self.vote_label.shape[0])

    def votes_per_user(self) -> np.ndarray:
        """(U,) number of labelled votes of each participant."""
        return np.bincount(self.vote_user, minlength=len(self.user_ids))

    def restrict(self, votes: np.ndarray) -> Conversation:
        """The same conversation with only the votes at indices ``votes`` (e.g. a training split).

        Splitting a restricted conversation again gives a validation split drawn
        from training data only.
        """
        return Conversation(self.name, self.statement_ids, self.texts, self.user_ids,
                            self.vote_user[votes], self.vote_statement[votes], self.vote_label[votes])


@dataclass(frozen=True)
class Split:
    """Vote indices (into a `Conversation`'s vote arrays) for training and testing."""

    conversation: Conversation
    train: np.ndarray  # (V_train,) int64 vote indices
    test: np.ndarray  # (V_test,) int64 vote indices
    test_users: np.ndarray  # (E,) int64 user indices whose held-out votes form the test set


def _conversation_rng(seed: int, name: str, purpose: str) -> np.random.Generator:
    # Seeded per (seed, conversation, protocol) so adding a conversation to the
    # folder, or running one protocol alone, leaves every other split unchanged.
    return np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(purpose.encode())])


def load_conversation(folder: Path) -> Conversation:
    """Read one conversation folder; raise ValueError naming the file if it is malformed."""
    comments_path, votes_path = folder / COMMENTS_FILE, folder / VOTES_FILE
    for path in (comments_path, votes_path):
        if not path.is_file():
            raise ValueError(f"{path} is missing; a Polis conversation folder needs "
                             f"{COMMENTS_FILE} and {VOTES_FILE}")
    with comments_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"comment-id", "comment-body"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{comments_path} lacks the column(s) {sorted(missing)}; "
                             "expected the Polis export header")
        body_by_id = {row["comment-id"]: row["comment-body"] for row in reader}

    with votes_path.open(newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if not header:
            raise ValueError(f"{votes_path} is empty; expected a Polis participants-votes export")
        # Vote columns are the headers that name a comment; the summary columns
        # before them (group-id, n-votes, ...) never do.
        columns = [(col, body_by_id[h]) for col, h in enumerate(header) if col > 0 and h in body_by_id]
        statement_ids = [header[col] for col, _ in columns]
        texts = [body for _, body in columns]
        user_ids: list[str] = []
        users: list[int] = []
        statements: list[int] = []
        labels: list[float] = []
        for row in rows:
            if not row:
                continue
            user_index = len(user_ids)
            user_ids.append(row[0])
            for statement_index, (col, _) in enumerate(columns):
                value = row[col].strip() if col < len(row) else ""
                if value in ("1", "1.0"):
                    label = 1.0
                elif value in ("-1", "-1.0"):
                    label = 0.0
                else:  # pass (0) or not shown: no label
                    continue
                users.append(user_index)
                statements.append(statement_index)
                labels.append(label)
    return Conversation(
        name=folder.name,
        statement_ids=statement_ids,
        texts=texts,
        user_ids=user_ids,
        vote_user=np.asarray(users, dtype=np.int64),
        vote_statement=np.asarray(statements, dtype=np.int64),
        vote_label=np.asarray(labels, dtype=np.float32),
    )


def load_polis(root: Path) -> list[Conversation]:
    """Every conversation under ``root`` (sub-folders holding both Polis files), sorted by name."""
    if not root.is_dir():
        raise ValueError(f"--data {root} is not a folder; pass a folder of Polis conversations")
    folders = sorted(
        d for d in root.iterdir() if (d / COMMENTS_FILE).is_file() and (d / VOTES_FILE).is_file()
    )
    if not folders:
        raise ValueError(f"--data {root} has no sub-folder with {COMMENTS_FILE} and {VOTES_FILE}; "
                         "pass the folder that holds one folder per conversation")
    return [load_conversation(folder) for folder in folders]


def eligible_users(conversation: Conversation, min_votes: int = 20) -> np.ndarray:
    """(E,) indices of the users with at least ``min_votes`` labelled (non-pass) votes."""
    return np.flatnonzero(conversation.votes_per_user() >= min_votes)


def _check_fraction(holdout_fraction: float) -> None:
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction={holdout_fraction} must lie strictly between 0 and 1; "
                         "use e.g. 0.25")


def split_seen_texts(
    conversation: Conversation, seed: int = 0, holdout_fraction: float = 0.25, min_votes: int = 20
) -> Split:
    """Hold out ``floor(holdout_fraction · n)`` random votes of each eligible user."""
    _check_fraction(holdout_fraction)
    rng = _conversation_rng(seed, conversation.name, "seen-texts")
    eligible = eligible_users(conversation, min_votes)
    is_test = np.zeros(conversation.num_votes, dtype=bool)
    order = np.argsort(conversation.vote_user, kind="stable")
    bounds = np.searchsorted(conversation.vote_user[order], np.arange(len(conversation.user_ids) + 1))
    for user in eligible:
        votes = order[bounds[user] : bounds[user + 1]]
        held_out = rng.choice(votes, size=math.floor(holdout_fraction * len(votes)), replace=False)
        is_test[held_out] = True
    return Split(conversation, np.flatnonzero(~is_test), np.flatnonzero(is_test), eligible)


def split_new_texts(
    conversation: Conversation, seed: int = 0, holdout_fraction: float = 0.25, min_votes: int = 20
) -> Split:
    """Hold out a random ``holdout_fraction`` of the statements; test on eligible users' votes on them."""
    _check_fraction(holdout_fraction)
    rng = _conversation_rng(seed, conversation.name, "new-texts")
    num_statements = len(conversation.statement_ids)
    held_out = rng.choice(num_statements, size=max(1, round(holdout_fraction * num_statements)),
                          replace=False)
    on_held_out = np.isin(conversation.vote_statement, held_out)
    eligible = eligible_users(conversation, min_votes)
    by_eligible = np.isin(conversation.vote_user, eligible)
    return Split(
        conversation,
        train=np.flatnonzero(~on_held_out),
        test=np.flatnonzero(on_held_out & by_eligible),
        test_users=eligible,
    )


def cold_start(split: Split, num_votes: int, seed: int = 0, user_fraction: float = 0.25) -> Split:
    """Keep only ``num_votes`` training votes of a random ``user_fraction`` of the tested users.

    The returned split's test set is those users' test votes; everyone else's
    training votes are kept, so the population model sees the same data a
    service would have when these users arrive. The same users are chosen for
    every ``num_votes`` (same seed), so the points of a cold-start curve differ
    only in N.
    """
    if num_votes < 0:
        raise ValueError(f"num_votes={num_votes} must be ≥ 0")
    if not 0.0 < user_fraction <= 1.0:
        raise ValueError(f"user_fraction={user_fraction} must lie in (0, 1]; use e.g. 0.25")
    conversation = split.conversation
    rng = _conversation_rng(seed, conversation.name, "cold-start")
    tested = np.unique(conversation.vote_user[split.test])
    cold = np.sort(rng.choice(tested, size=max(1, round(user_fraction * len(tested))), replace=False))
    # One fixed random order of each user's training votes; the first N are kept,
    # so N = 5 ⊂ N = 10 ⊂ N = 20 for every user.
    train = split.train[rng.permutation(len(split.train))]
    train_user = conversation.vote_user[train]
    is_cold = np.isin(train_user, cold)
    keep = ~is_cold
    seen = dict.fromkeys(cold.tolist(), 0)
    for position in np.flatnonzero(is_cold):
        user = int(train_user[position])
        if seen[user] < num_votes:
            seen[user] += 1
            keep[position] = True
    test = split.test[np.isin(conversation.vote_user[split.test], cold)]
    return Split(conversation, np.sort(train[keep]), test, cold)
