"""The Polis loader and the evaluation protocols, on small synthetic folders in the Polis layout."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from evaluations.polis import (
    cold_start,
    eligible_users,
    load_conversation,
    load_polis,
    split_new_texts,
    split_seen_texts,
)

WORDS = [f"w{i}" for i in range(40)]


def write_conversation(
    folder: Path,
    num_statements: int = 24,
    num_users: int = 40,
    seed: int = 0,
    vote_probability: float = 0.8,
    few_votes_users: int = 5,
) -> dict[tuple[str, str], int]:
    """Write a Polis-layout conversation with two opinion groups; return {(user, comment): vote}.

    Statements 0, 2, 4, … are partisan (group 0 agrees, group 1 disagrees, odd
    ones the other way round, with 10% noise); every text is a distinct word
    string so any encoder tells them apart. The last ``few_votes_users`` users
    vote on at most 10 statements (never eligible); 10% of votes are passes.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    comment_ids = [str(100 + 3 * i) for i in range(num_statements)]  # ids ≠ column positions
    with (folder / "comments.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "datetime", "comment-id", "author-id", "agrees", "disagrees",
                         "moderated", "comment-body"])
        for i, comment_id in enumerate(comment_ids):
            body = " ".join(rng.choice(WORDS, size=6)) + f" w{i % 40} stance{i % 2}"
            writer.writerow([0, "", comment_id, 0, 0, 0, 1, body])
    votes: dict[tuple[str, str], int] = {}
    with (folder / "participants-votes.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["participant", "group-id", "n-comments", "n-votes", "n-agree", "n-disagree",
                         *comment_ids])
        for user in range(num_users):
            group = user % 2
            limit = 10 if user >= num_users - few_votes_users else num_statements
            shown = set(rng.permutation(num_statements)[:limit].tolist())
            row = []
            for i, comment_id in enumerate(comment_ids):
                if i not in shown or rng.random() > vote_probability:
                    row.append("")
                    continue
                if rng.random() < 0.1:
                    value = 0
                else:
                    agrees = (i % 2 == group) != (rng.random() < 0.1)
                    value = 1 if agrees else -1
                votes[(str(user), comment_id)] = value
                row.append(str(value))
            writer.writerow([user, group, 0, 0, 0, 0, *row])
    return votes


@pytest.fixture
def polis_folder(tmp_path: Path) -> Path:
    root = tmp_path / "polis"
    write_conversation(root / "alpha", seed=1)
    write_conversation(root / "beta", num_statements=30, num_users=50, seed=2)
    (root / "not-a-conversation").mkdir()
    (root / "README.md").write_text("ignored")
    return root


def test_load_reads_agree_disagree_as_labels_and_drops_passes(tmp_path: Path) -> None:
    written = write_conversation(tmp_path / "c", seed=3)
    conversation = load_conversation(tmp_path / "c")
    loaded = {
        (conversation.user_ids[u], conversation.statement_ids[s]): label
        for u, s, label in zip(conversation.vote_user, conversation.vote_statement, conversation.vote_label)
    }
    expected = {key: float(value == 1) for key, value in written.items() if value != 0}
    assert loaded == expected
    assert conversation.texts[1].endswith("stance1")
    assert conversation.statement_ids[1] == "103"


def test_load_polis_takes_every_conversation_folder_and_skips_others(polis_folder: Path) -> None:
    conversations = load_polis(polis_folder)
    assert [c.name for c in conversations] == ["alpha", "beta"]


def test_load_polis_names_the_problem_for_a_folder_without_conversations(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no sub-folder with comments.csv"):
        load_polis(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "comments.csv").write_text("comment-id,comment-body\n")
    with pytest.raises(ValueError, match="participants-votes.csv is missing"):
        load_conversation(tmp_path / "broken")


def test_eligibility_counts_only_non_pass_votes(tmp_path: Path) -> None:
    written = write_conversation(tmp_path / "c", seed=4)
    conversation = load_conversation(tmp_path / "c")
    non_pass = {}
    for (user, _), value in written.items():
        non_pass[user] = non_pass.get(user, 0) + (value != 0)
    expected = sorted(int(u) for u, n in non_pass.items() if n >= 20)
    eligible = [int(conversation.user_ids[u]) for u in eligible_users(conversation, 20)]
    assert eligible == expected
    assert 35 not in eligible  # a few-votes user (≤ 10 votes) is never eligible


def test_seen_texts_holds_out_a_quarter_of_each_eligible_users_votes(polis_folder: Path) -> None:
    conversation = load_polis(polis_folder)[0]
    split = split_seen_texts(conversation, seed=0)
    assert np.intersect1d(split.train, split.test).size == 0
    assert np.union1d(split.train, split.test).size == conversation.num_votes
    per_user = conversation.votes_per_user()
    held_out = np.bincount(conversation.vote_user[split.test], minlength=len(per_user))
    eligible = set(eligible_users(conversation).tolist())
    for user, count in enumerate(per_user):
        assert held_out[user] == (math.floor(0.25 * count) if user in eligible else 0)
    # Held-out statements were voted on by someone in training (the "seen" in seen texts).
    assert set(conversation.vote_statement[split.test]) <= set(conversation.vote_statement[split.train])


def test_splits_are_reproducible_from_the_seed(polis_folder: Path) -> None:
    conversation = load_polis(polis_folder)[0]
    assert np.array_equal(split_seen_texts(conversation, 7).test, split_seen_texts(conversation, 7).test)
    assert not np.array_equal(split_seen_texts(conversation, 7).test, split_seen_texts(conversation, 8).test)
    assert np.array_equal(split_new_texts(conversation, 7).test, split_new_texts(conversation, 7).test)


def test_new_texts_keeps_every_test_statement_out_of_training(polis_folder: Path) -> None:
    for conversation in load_polis(polis_folder):
        split = split_new_texts(conversation, seed=0)
        test_statements = set(conversation.vote_statement[split.test].tolist())
        train_statements = set(conversation.vote_statement[split.train].tolist())
        assert test_statements and not test_statements & train_statements
        assert len(test_statements) == round(0.25 * len(conversation.statement_ids))
        assert set(conversation.vote_user[split.test].tolist()) <= set(eligible_users(conversation).tolist())
        # Every vote on a training statement is in training, ineligible users' included.
        on_train = np.isin(conversation.vote_statement, list(train_statements))
        assert np.array_equal(np.flatnonzero(on_train), np.sort(split.train))


def test_validation_split_of_a_restricted_conversation_uses_training_votes_only(polis_folder: Path) -> None:
    conversation = load_polis(polis_folder)[1]
    split = split_new_texts(conversation, seed=0)
    inner = split_new_texts(conversation.restrict(split.train), seed=1)
    inner_test_statements = set(conversation.vote_statement[split.train[inner.test]].tolist())
    assert not inner_test_statements & set(conversation.vote_statement[split.test].tolist())


def test_cold_start_keeps_n_training_votes_of_the_chosen_users_only(polis_folder: Path) -> None:
    conversation = load_polis(polis_folder)[1]
    split = split_seen_texts(conversation, seed=0)
    previous: set[int] | None = None
    for size in (0, 5, 10):
        cold = cold_start(split, size, seed=0)
        cold_users = set(cold.test_users.tolist())
        tested = set(np.unique(conversation.vote_user[split.test]).tolist())
        assert cold_users <= tested and len(cold_users) == round(0.25 * len(tested))
        train_counts = np.bincount(conversation.vote_user[cold.train], minlength=len(conversation.user_ids))
        full_counts = np.bincount(conversation.vote_user[split.train], minlength=len(conversation.user_ids))
        for user in range(len(conversation.user_ids)):
            expected = min(size, full_counts[user]) if user in cold_users else full_counts[user]
            assert train_counts[user] == expected
        assert set(conversation.vote_user[cold.test].tolist()) == cold_users
        assert set(cold.train.tolist()) <= set(split.train.tolist())
        kept = set(cold.train.tolist())
        if previous is not None:  # N = 5 ⊂ N = 10: the curve differs only in N
            assert previous <= kept
        previous = kept
