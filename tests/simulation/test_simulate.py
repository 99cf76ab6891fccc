"""`tailor simulate`: window statistics (pure), and a run against a real server over HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import torch
import typer
from typer.testing import CliRunner

from contracts.gold_checks import GoldAnswer
from contracts.keys import FEEDBACK_STREAM, gold_answers_key, user_key
from contracts.settings import DEFAULT_MODEL_DIR, Settings
from simulation.cli import simulate
from simulation.harness import RoundRecord, SimulationConfig, UserRun, run_user, window_stats
from simulation.users import make_users
from tests.local_server import local_server


def _record(round_index: int, styles: list[str | None], scores: list[float]) -> RoundRecord:
    return RoundRecord(round_index, styles, scores, [], 0, f"tailor-v{round_index}")


def test_window_stats_count_preferred_dismissive_and_mean_score_of_eval_samples() -> None:
    user = make_users("bullet_lover")[0]  # prefers bullets
    run = UserRun(user)
    run.records = [
        _record(0, ["bullets", "dismissive"], [1.0, -1.0]),
        _record(1, ["concise", None], [-0.2, 0.0]),
        _record(2, ["bullets", "bullets"], [1.0, 1.0]),
    ]
    first, second = window_stats(run, window=2)
    assert (first.first_round, first.last_round, first.samples) == (0, 1, 4)
    assert first.preferred_rate == pytest.approx(1 / 4)
    assert first.dismissive_rate == pytest.approx(1 / 4)
    assert first.mean_score == pytest.approx((1.0 - 1.0 - 0.2 + 0.0) / 4)
    assert first.style_counts == {"bullets": 1, "dismissive": 1, "concise": 1, "none": 1}
    assert first.adapter_version == "tailor-v1"
    assert (second.samples, second.preferred_rate, second.mean_score) == (2, 1.0, 1.0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("n", 9, "n=9"), ("rounds", 0, "rounds=0"), ("base_url", "localhost:8000", "http://"),
     ("session_judgments", -1, "session_judgments=-1"),
     ("gold_check_every", -1, "gold_check_every=-1"), ("behaviour_prompts", 0, "behaviour_prompts=0")],
)
def test_bad_simulation_config_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**{field: value})


def test_base_url_with_or_without_v1_reaches_the_same_root() -> None:
    assert SimulationConfig(base_url="http://h:1/v1/").root_url == "http://h:1"
    assert SimulationConfig(base_url="http://h:1").root_url == "http://h:1"


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory) -> Iterator[str]:
    """The Tailor API (in-process uvicorn, real HTTP) serving the shipped default model."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("simulate")
    settings = Settings(
        base_model=str(DEFAULT_MODEL_DIR), adapter_store=str(root / "store"), data_dir=root,
        redis_url=redis_server.url,
    )
    with local_server(settings) as url:
        yield url


@pytest.mark.slow
def test_simulate_against_a_server_writes_json_and_png_and_never_rates_eval_samples(
    server: str, redis_client, tmp_path: Path
) -> None:
    app = typer.Typer()
    app.command("simulate")(simulate)
    app.command("noop")(lambda: None)  # two commands: typer keeps "simulate" as a subcommand
    json_path, png = tmp_path / "summary.json", tmp_path / "curves.png"
    result = CliRunner().invoke(app, [
        "simulate", "--base-url", f"{server}/v1", "--users", "4", "--rounds", "4",
        "--window", "2", "--n", "3", "--eval-samples", "2", "--max-tokens", "64",
        "--json", str(json_path), "--png", str(png),
    ])
    assert result.exit_code == 0, result.output
    assert "sim-3-adversarial" in result.output and "preferred" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(json_path.read_text())
    assert len(summary["users"]) == 4
    for user_id, user in summary["users"].items():
        assert user["error"] is None
        assert set(user["taste"]) == set(summary["styles"])
        for curve in ("preferred_rate", "mean_score", "dismissive_rate"):
            assert len(user[curve]) == 2  # 4 rounds in windows of 2
            assert all(-1.0 <= value <= 1.0 for value in user[curve])
        assert user["eval_samples"] == 4 * 2
        # the server holds exactly the feedback the harness says it gave ...
        view = httpx.get(f"{server}/v1/users/{user_id}", headers={"X-User-Id": user_id}).json()
        assert view["feedback"]["total"] == user["feedback_events"] > 0
    assert summary["users"]["sim-3-adversarial"]["preferred_styles"] == ["dismissive"]
    # ... on one completion per round and user: the evaluation completions got none.
    completions = Counter(
        redis_client.hget(key, "user_id").decode()
        for key in redis_client.scan_iter("tailor:completion:*")
    )
    rated = {}
    for _, fields in redis_client.xrange(FEEDBACK_STREAM):
        rated.setdefault(fields[b"user_id"].decode(), set()).add(fields[b"completion_id"])
    for user_id in summary["users"]:
        assert completions[user_id] == 2 * 4  # a feedback and an evaluation request per round
        assert len(rated[user_id]) == 4


def test_simulate_refuses_an_unknown_preset_naming_the_presets() -> None:
    app = typer.Typer()
    app.command("simulate")(simulate)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["simulate", "--users", "nobody"])
    assert result.exit_code == 2
    assert "unknown presets ['nobody']" in result.output and "adversarial" in result.output


@pytest.mark.slow
def test_a_user_with_sessions_waits_for_the_learners_after_each_session(
    server: str, redis_client
) -> None:
    """After every ``session_judgments`` judgments the user asks nothing more until the
    learners trained on all of them (here a stand-in learner that marks them trained
    half a second after it sees them, as a learner's update records it); without a
    learner the wait ends at ``session_wait_s`` and is counted as cut."""
    user = make_users("emoji_fan", prefix="sess")[0]  # thumbs: rates both choices per round
    config = SimulationConfig(base_url=server, users="emoji_fan", rounds=6, n=2,
                              eval_samples=1, max_tokens=16, user_prefix="sess",
                              session_judgments=4, session_wait_s=30.0)
    snapshots: list[tuple[int, int]] = []  # (judgments given, trained on), every 0.1 s
    done = threading.Event()

    def learner() -> None:
        key = user_key(user.user_id)
        while not done.is_set():
            given, trained = redis_client.hmget(key, "feedback_events", "learner_examples_trained")
            snapshots.append((int(given or 0), int(trained or 0)))
            if given is not None and int(given) > int(trained or 0):
                time.sleep(0.5)  # training: a user who does not wait goes on meanwhile
                redis_client.hset(key, "learner_examples_trained", int(given))
            time.sleep(0.1)

    thread = threading.Thread(target=learner, daemon=True)
    thread.start()
    try:
        run = run_user(config, 0, user)
    finally:
        done.set()
        thread.join()
    assert run.error is None
    # sessions of 4 judgments (2 rounds each); no wait after the last round
    assert len(run.session_waits) == 2 and run.sessions_cut == 0
    # nothing past a session's end before the learners had trained on the whole session
    for end in (4, 8):
        assert not [(g, t) for g, t in snapshots if g > end and t < end], snapshots
    assert int(redis_client.hget(user_key(user.user_id), "feedback_events")) == 12

    alone = run_user(replace(config, session_wait_s=1.0, rounds=3), 0, user)
    assert alone.error is None
    assert alone.sessions_cut == 1 and alone.session_waits[0] >= 1.0


def test_a_user_with_gold_checks_answers_them_as_they_judge_within_their_judgments(
    server: str, redis_client
) -> None:
    """Every fourth judgment is a gold check (the default model ships principles), taken
    from the server and answered as the user's rater kind judges: a credulous user calls
    every false answer honest. Checks count toward max_events; behaviour prompts are
    measured over several prompts per round."""
    user = make_users("credulous", prefix="gold")[0]
    config = SimulationConfig(base_url=server, users="credulous", rounds=12, n=2,
                              eval_samples=1, max_tokens=16, user_prefix="gold",
                              max_events=12, gold_check_every=4, behaviour_samples=1,
                              behaviour_prompts=2)
    run = run_user(config, 0, user)
    assert run.error is None
    checks = sum(record.gold_checks for record in run.records)
    given = sum(record.feedback_events for record in run.records)
    assert checks >= 2 and given + checks == 12
    answers = [GoldAnswer.from_json(raw)
               for raw in redis_client.hvals(gold_answers_key(user.user_id))]
    assert len(answers) == checks
    honest = [a for a in answers if a.criterion == "honest"]
    assert honest and all(a.said_fine for a in honest)  # credulous: every answer is honest
    assert {a.criterion for a in answers} == {"harmless", "honest"}  # in turn, both kept thin
    view = httpx.get(f"{server}/v1/users/{user.user_id}",
                     headers={"X-User-Id": user.user_id}).json()
    assert view["feedback"]["gold_checks"] == checks and view["feedback"]["total"] == given
    # two behaviour prompts per category and round, one answer each
    assert all(len(answers) == 2 for record in run.records
               for answers in record.eval_behaviours.values())
    # and each answer's style beside its behaviour, read from the same text
    assert all(record.eval_behaviour_styles.keys() == record.eval_behaviours.keys()
               and all(len(record.eval_behaviour_styles[c]) == 2 for c in record.eval_behaviours)
               for record in run.records)
