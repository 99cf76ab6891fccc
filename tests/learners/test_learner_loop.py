"""The learner loop on a tiny model: feedback in, a gated adapter out, served at once."""

import logging
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import torch

from contracts.gold_checks import gold_deck
from contracts.keys import (
    FEEDBACK_LAG_KEY,
    LEARNER_STATS_KEY,
    PENDING_KEY,
    SAFETY_START_KEY,
    SAFETY_START_LOCK_KEY,
    examples_key,
    forgotten_key,
    user_prompts_key,
)
from contracts.principles_file import load_principles
from contracts.settings import DEFAULT_MODEL_DIR, Settings
from learners.anchor import load_lora, lora_state
from learners.gate import GateConfig, next_step_crosses_kl_bound
from learners.judgments import reward_events
from learners.training_data import TrainingExample
from learners.worker import LearnerLoop, LearnerOptions
from tests.learning_fixtures import give_rankings
from tests.local_server import local_server


def sample(text: str, name: str) -> float:
    """The value of one sample (name with its labels) in Prometheus text."""
    (value,) = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


@pytest.fixture
def settings(serving_model_dir: Path, redis_server, redis_client, tmp_path) -> Settings:
    torch.set_num_threads(1)
    return Settings(base_model=str(serving_model_dir), adapter_store=str(tmp_path / "store"),
                    data_dir=tmp_path, redis_url=redis_server.url, learner_min_feedback=4,
                    learner_ppo_iterations=2, learner_rollout_batch=4, learner_max_new_tokens=8)


def test_a_user_with_enough_feedback_gets_a_published_adapter_that_serves_next(settings, redis_client):
    with local_server(settings) as url:
        give_rankings(url, "alice", 3)
        loop = LearnerLoop(settings, "w1")
        assert loop.step(block_ms=50) is None  # 3 < learner_min_feedback
        give_rankings(url, "alice", 2, start=3)
        outcome = loop.step(block_ms=50)
        assert outcome.user_id == "alice" and outcome.examples == 5
        assert outcome.decision.publish and outcome.version is not None
        assert len(outcome.ppo) == 2

        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        served = client.chat.completions.create(model="tailor-base", max_tokens=4, extra_headers={"X-User-Id": "alice"},
                                                messages=[{"role": "user", "content": "hi"}])
        assert served.system_fingerprint == f"tailor-{outcome.version}"
        # the update left alice's reward for serving to choose her comparisons by
        compared = client.chat.completions.create(
            model="tailor-base", max_tokens=4, n=2, extra_headers={"X-User-Id": "alice"},
            messages=[{"role": "user", "content": "hi"}], extra_body={"compare": True})
        assert len(compared.choices) == 2
        view = httpx.get(f"{url}/v1/users/alice", headers={"X-User-Id": "alice"}).json()
        assert view["adapter_version"] == outcome.version
        assert {"reward", "kl", "policy_loss", "value_loss", "entropy"} <= set(view["learner"])
        assert loop.step(block_ms=50) is None  # nothing new: no second update
        metrics = httpx.get(f"{url}/metrics").text
    assert redis_client.hget(LEARNER_STATS_KEY, "published") == b"1"
    assert 'tailor_learner_updates_total{outcome="published"} 1.0' in metrics
    assert 'tailor_comparisons_total{chosen_by="thompson"} 1.0' in metrics
    for name in ("reward", "kl", "policy_loss", "value_loss", "entropy"):
        assert sample(metrics, f'tailor_learner_user_{name}{{user="alice"}}') == pytest.approx(
            view["learner"][name])
        assert sample(metrics, f"tailor_learner_last_{name}") == pytest.approx(view["learner"][name])
    sequence = int(outcome.version[1:].split(".")[0])
    assert sample(metrics, 'tailor_learner_user_adapter_sequence{user="alice"}') == sequence
    lag = sample(metrics, 'tailor_learner_feedback_lag_seconds{quantile="0.95"}')
    assert 0 < lag < 600  # the 5 events were given minutes ago at most


def test_an_update_on_a_burst_of_judgments_runs_the_iterations_of_the_updates_it_stands_for(
        settings):
    # learner_min_feedback 4, learner_ppo_iterations 2: 9 judgments at once are two
    # updates' worth; the learners were busy while they came in
    with local_server(settings) as url:
        give_rankings(url, "alice", 9)
        loop = LearnerLoop(settings, "w1")
        outcome = loop.step(block_ms=50)
    assert outcome.examples == 9 and len(outcome.ppo) == 4
    assert [loop.updater.iterations_for(n) for n in (1, 4, 7, 8, 12, 16, 400)] == [
        2, 2, 2, 4, 6, 8, 8]  # at most BURST_UPDATES_CAP updates' worth

def test_a_rejected_update_keeps_the_previous_version_and_counts_the_reason(settings, redis_client):
    strict = LearnerOptions(gate=GateConfig(kl_bound=-1.0))  # no update can pass
    with local_server(settings) as url:
        give_rankings(url, "bob", 4)
        outcome = LearnerLoop(settings, "w1", strict).step(block_ms=50)
    assert not outcome.decision.publish and outcome.decision.reason == "kl_too_large"
    assert outcome.version is None
    assert redis_client.hget("tailor:adapter:bob", "version") is None
    assert redis_client.hget(LEARNER_STATS_KEY, "rejected_kl_too_large") == b"1"
    assert redis_client.hget("tailor:user:bob", "learner_last_decision") == b"kl_too_large"
    with local_server(settings) as url:
        metrics = httpx.get(f"{url}/metrics").text
    assert 'tailor_learner_updates_total{outcome="kl_too_large"} 1.0' in metrics
    assert sample(metrics, 'tailor_learner_user_updates_total{user="bob"}') == 1
    assert 'tailor_learner_user_adapter_sequence{user="bob"}' not in metrics  # nothing served


def test_a_users_new_judgments_are_scored_by_a_reward_model_that_never_saw_them(settings):
    # the first update refits the population on everyone's examples; the other user's,
    # not yet trained on, must stay out of it, or their online accuracy (each new
    # judgment predicted before training on it) is a training accuracy
    with local_server(settings) as url:
        give_rankings(url, "alice", 4)
        give_rankings(url, "bob", 4)
        loop = LearnerLoop(settings, "w1", LearnerOptions(gate=GateConfig(kl_bound=-1.0)))
        first = loop.step(block_ms=50)
        other = ({"alice", "bob"} - {first.user_id}).pop()
        assert set(loop.updater.reward_model.user_index) == {first.user_id}
        assert loop.updater.population_seen == {first.user_id: 4, other: 0}
        second = loop.step(block_ms=50)
    assert second.user_id == other and second.examples == 4
    assert other in loop.updater.reward_model.user_index  # fitted at its own update
    # and into the population (its user tower) then: counted over everything stored, the
    # 8 examples had not grown since the first refit, and the other's were never fitted
    assert loop.updater.population_seen == {"alice": 4, "bob": 4}


def test_a_users_first_judgments_are_fitted_into_the_population_however_few(settings):
    # bob's 4 after alice's 24 grow everyone's by less than a fifth; his head is confined
    # to the population's user tower, so the tower must see them
    with local_server(settings) as url:
        give_rankings(url, "alice", 24)
        give_rankings(url, "bob", 4, start=24)
        loop = LearnerLoop(settings, "w1", LearnerOptions(gate=GateConfig(kl_bound=-1.0)))
        assert loop.step(block_ms=50).user_id == "alice"
        assert loop.updater.population_seen == {"alice": 24, "bob": 0}
        assert loop.step(block_ms=50).user_id == "bob"
    assert loop.updater.population_seen == {"alice": 24, "bob": 4}


def test_scores_and_corrections_sent_over_http_are_trained_on(settings, redis_client):
    text = "Boil it for seven minutes."
    with local_server(settings) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        judgments = []
        for i in range(2):
            out = client.chat.completions.create(
                model="tailor-base", messages=[{"role": "user", "content": f"egg question {i}"}],
                n=2, max_tokens=6, extra_headers={"X-User-Id": "carol"})
            judgments += [
                {"completion_id": out.id, "type": "correction", "choice": 0, "correction": text},
                {"completion_id": out.id, "type": "score", "choice": 1, "score": 8 - i},
            ]
        for body in judgments:
            httpx.post(f"{url}/v1/feedback", json=body,
                       headers={"X-User-Id": "carol"}).raise_for_status()
        loop = LearnerLoop(settings, "w1")
        outcome = loop.step(block_ms=50)
    assert outcome.user_id == "carol" and outcome.examples == 4
    examples = [TrainingExample.from_json(r) for r in redis_client.lrange(examples_key("carol"), 0, -1)]
    assert [e.kind for e in examples] == ["correction", "score"] * 2
    correction = examples[0]
    assert correction.features.shape[0] == 3 and correction.ranking == [2, 0]
    # the corrected text's features: the learner's base model read it after the prompt
    expected = loop.updater.answer_features(correction.prompt_token_ids, text)
    np.testing.assert_allclose(correction.features[2], expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(correction.features[2], correction.features[0])
    assert examples[1].score == 8 and examples[1].label is None


def test_the_operators_learner_settings_reach_the_updater(settings, caplog):
    # the gate's decision on the bound is tests/learners/test_gate.py's; a one-iteration
    # update's held-out KL estimate can come out below any tiny bound (k1 is signed), so
    # not here. What the taste rule and the imitation do: the tests named after them.
    settings = settings.model_copy(update={
        "principles_file": DEFAULT_MODEL_DIR / "principles.yaml",
        "learner_safety_start_iterations": 1})
    loop = LearnerLoop(settings.model_copy(update={
        "learner_kl_bound": 3.5, "learner_breach_taste": False,
        "learner_safety_start_everyday_steps": 1, "learner_target_kl": 0.02,
        "learner_kl_loss_coef": 0.3}), "w1")
    assert loop.updater.gate_config.kl_bound == 3.5  # TAILOR_LEARNER_KL_BOUND
    assert loop.updater.ppo_config.target_kl == 0.02  # TAILOR_LEARNER_TARGET_KL
    assert loop.updater.ppo_config.kl_loss_coef == 0.3  # TAILOR_LEARNER_KL_LOSS_COEF
    assert loop.updater.breach_taste is False  # TAILOR_LEARNER_BREACH_TASTE
    caplog.set_level(logging.INFO, logger="learners.safety_start")
    loop.updater.train_safety_start()  # TAILOR_LEARNER_SAFETY_START_EVERYDAY_STEPS
    assert "of the base model's 240 everyday answers" in caplog.text  # 60 prompts × 4
    defaults = LearnerLoop(settings, "w2").updater
    assert defaults.gate_config.kl_bound == 12.0 and defaults.breach_taste is True
    assert defaults.ppo_config.target_kl is None and defaults.ppo_config.kl_loss_coef == 0.1
    caplog.clear()
    defaults.train_safety_start()  # the principles' everyday prompts, but no steps
    assert "imitating" not in caplog.text


def test_an_update_whose_rollouts_near_the_kl_bound_stops_its_iterations_there(settings,
                                                                               caplog):
    settings = settings.model_copy(update={"learner_ppo_iterations": 6})
    # iteration 0 samples the fresh LoRA (B = 0): the reference itself, KL 0; steps later
    # the rollouts are measurably away from it and pass this tiny bound. Which readings
    # come is the draw's (exact per position, so never below 0: the drawn tokens' k1
    # read −0.16 at a second iteration), so the test replays the rules on the readings
    # and asks for the stop where they end the update, not at a fixed iteration: rollouts past the bound a second time (the first
    # sends the adapter back and the update goes on), or a line through the readings of
    # the states kept that one more step would carry past it.
    bound = 1e-4
    near = LearnerOptions(gate=GateConfig(kl_bound=bound, tolerance=1e9, cost_tolerance=1e9))
    caplog.set_level(logging.INFO, logger="learners.user_update")
    with local_server(settings) as url:
        give_rankings(url, "cleo", 4)
        outcome = LearnerLoop(settings, "w1", near).step(block_ms=50)
    kls = [stats.kl_exact for stats in outcome.ppo]  # what the rules go by
    assert abs(kls[0]) < 1e-5 and len(kls) < 6, kls  # stopped before its 6 iterations

    def ends(readings: list[float]) -> tuple[int, str] | None:
        """(iteration, rule) where the rules end an update of 6 with these readings."""
        path, held, rollbacks = [], 0, 0
        for iteration, kl in enumerate(readings):
            path.append(kl)
            held = min(held + 1, 2)
            if kl > bound and held == 2:
                path.pop()
                held, rollbacks = 0, rollbacks + 1
                if rollbacks == 2:
                    return iteration, "the update ends"
            elif iteration < 5 and next_step_crosses_kl_bound(path, bound):
                return iteration, "stopped after"
        return None

    stop = ends(kls)
    assert stop is not None and stop[0] == len(kls) - 1, (kls, stop)
    assert stop[1] in caplog.text, caplog.text  # the log says which rule it was


def test_rollouts_past_the_kl_bound_send_the_adapter_back_to_the_state_sampled_before(
        settings, caplog):
    # A bound below 0: iteration 0's rollouts (the fresh LoRA, the reference itself: KL 0)
    # are past it with no state before them to go back to, so the update goes on; the
    # second iteration's are past it too, and the adapter goes back to the fresh one and
    # goes on from there (a fresh optimiser). Iteration 2 samples the fresh LoRA again,
    # iteration 3 past the bound sends it back a second time, and the update ends.
    settings = settings.model_copy(update={"learner_ppo_iterations": 6})
    past = LearnerOptions(gate=GateConfig(kl_bound=-1.0, tolerance=1e9, cost_tolerance=1e9))
    caplog.set_level(logging.INFO, logger="learners.user_update")
    with local_server(settings) as url:
        give_rankings(url, "cleo", 4)
        loop = LearnerLoop(settings, "w1", past)
        outcome = loop.step(block_ms=50)
    assert len(outcome.ppo) == 4, [stats.kl_exact for stats in outcome.ppo]
    assert outcome.ppo[2].kl == 0.0  # the fresh LoRA sampled again: the reference itself
    assert ("went back to the adapter its iteration 1 sampled (rollouts' KL 0.00) after "
            "iteration 2 of 6") in caplog.text and "it goes on from there" in caplog.text
    assert ("went back to the adapter its iteration 3 sampled (rollouts' KL 0.00) after "
            "iteration 4 of 6") in caplog.text and "the update ends" in caplog.text
    gated = lora_state(loop.updater.policy, "default")  # the one slot (users per batch: 1)
    fresh = loop.updater.fresh_lora
    assert all(torch.equal(gated[name], fresh[name]) for name in fresh)  # two steps undone
    assert outcome.after.kl == 0.0  # the gate measured the reference itself
    assert outcome.decision.reason == "kl_too_large"  # and still judged it (0 > −1)


def test_a_last_step_past_the_kl_bound_is_gated_as_the_state_its_iteration_sampled(
        settings, caplog):
    # No rollouts measure where an update's last step lands. Here it lands far out (the
    # LoRA's B weights × 1000 after the last iteration, as a step much too large would);
    # the gate refuses that, and judges the state the last iteration sampled instead.
    caplog.set_level(logging.INFO, logger="learners.user_update")
    loose = LearnerOptions(gate=GateConfig(kl_bound=1.0, tolerance=1e9, cost_tolerance=1e9))
    with local_server(settings) as url:
        give_rankings(url, "cleo", 4)
        loop = LearnerLoop(settings, "w1", loose)
        updater, scheduler = loop.updater, loop.scheduler
        loop.consumer.poll(block_ms=50)  # his rankings into his examples (step's first part)
        job = updater._prepare("cleo", scheduler.try_lease("cleo"), "default", 2)
        for iteration in range(2):
            updater._ppo_iteration([job], iteration, scheduler)
        sampled = job.states_sampled[-1]
        jumped = {name: tensor * 1000 if "lora_B" in name else tensor
                  for name, tensor in lora_state(updater.policy, "default").items()}
        load_lora(updater.policy, "default", jumped)
        outcome = updater._finish(job, scheduler)
    assert "the gate judges the adapter its last iteration sampled" in caplog.text
    assert outcome.decision.reason == "ok" and outcome.version is not None
    assert outcome.after.kl <= 1.0
    published = lora_state(updater.policy, "default")
    assert all(torch.equal(published[name], sampled[name]) for name in sampled)
    assert any(not torch.equal(sampled[name], updater.fresh_lora[name]) for name in sampled)


def test_harmless_judgments_train_the_shared_heads_and_show_the_raters_standing(
        settings, redis_client):
    settings = settings.model_copy(update={"principles_file": DEFAULT_MODEL_DIR / "principles.yaml"})
    with local_server(settings) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for user, agrees in (("dora", True), ("eli", False)):
            give_rankings(url, user, 2)
            for i in range(3):  # two answers each, judged harmless or not
                out = client.chat.completions.create(
                    model="tailor-base", messages=[{"role": "user", "content": f"provoke {i}"}],
                    n=2, max_tokens=6, extra_headers={"X-User-Id": user})
                for choice, value in ((0, "up"), (1, "down" if agrees else "up")):
                    httpx.post(f"{url}/v1/feedback", headers={"X-User-Id": user}, json={
                        "completion_id": out.id, "type": "thumbs", "choice": choice,
                        "value": value, "criterion": "harmless"}).raise_for_status()
        checks = Counter()  # dora answers eight gold checks too, right
        for _ in range(8):
            check = httpx.get(f"{url}/v1/users/dora/gold-checks/next",
                              headers={"X-User-Id": "dora"}).json()
            checks[check["criterion"]] += 1
            truth = {c.id: c.fine for c in gold_deck(load_principles(settings.principles_path))}
            httpx.post(f"{url}/v1/users/dora/gold-checks/{check['id']}",
                       headers={"X-User-Id": "dora"},
                       json={"thumb": "up" if truth[check["id"]] else "down"}).raise_for_status()
        # every update publishes (its metrics are what the user's view shows): this test is
        # about the heads, not the gate, which refused one run's update for a noisy cost rise
        anything_goes = GateConfig(kl_bound=1e9, tolerance=1e9, cost_tolerance=1e9)
        loop = LearnerLoop(settings, "w1", LearnerOptions(gate=anything_goes))
        outcomes = [loop.step(block_ms=50), loop.step(block_ms=50)]
        assert {o.user_id for o in outcomes} == {"dora", "eli"}
        # the shared heads judged the held-out answers before and after each update
        assert all(set(o.after.costs) == {"harmless", "honest"} for o in outcomes)
        # harmless judgments train no one's own reward: only the rankings become its events
        examples = [TrainingExample.from_json(r)
                    for r in redis_client.lrange(examples_key("dora"), 0, -1)]
        assert len(examples) == 8 and len(reward_events("dora", examples)) == 2
        view = httpx.get(f"{url}/v1/users/dora", headers={"X-User-Id": "dora"}).json()
        metrics = httpx.get(f"{url}/metrics").text
    standing = view["rater"]["harmless"]
    assert standing["judgments_used"] == 6 and 0 < standing["reliability"] < 1
    # checks go where her record is thinnest: honesty, until it matches her 6 judgments
    # of harmlessness, then each in turn
    assert checks == {"honest": 7, "harmless": 1}
    assert standing["gold_checks_used"] == 1
    # dora judged nothing about honesty: her checks of it wait for someone's judgments
    assert view["rater"]["honest"] == {"reliability": None, "judgments_used": 0,
                                       "gold_checks_used": 7}
    assert view["feedback"]["gold_checks"] == 8
    assert 0 <= view["learner"]["harmless_cost"] <= 1
    # her taste is rankings only, which say nothing absolute to check: full weight in the
    # population reward (learners.taste_reliability)
    assert view["learner"]["population_weight"] == 1.0
    assert sample(metrics, 'tailor_shared_head_judgments{criterion="harmless"}') == 12
    assert sample(metrics, 'tailor_shared_head_raters{criterion="harmless"}') == 2
    assert sample(metrics, 'tailor_rater_reliability_count{criterion="harmless"}') == 2
    assert 0 <= sample(metrics, 'tailor_shared_head_agreement{criterion="harmless"}') <= 1


def test_with_red_team_taste_off_only_the_shared_heads_score_answers_to_red_team_prompts(
        settings, redis_client):
    settings = settings.model_copy(update={
        "principles_file": DEFAULT_MODEL_DIR / "principles.yaml",
        "learner_red_team_share": 0.5, "learner_red_team_taste": False,
        "learner_shared_head_threshold": 0.5})
    with local_server(settings) as url:
        give_rankings(url, "fay", 4)
        loop = LearnerLoop(settings, "w1")
        assert loop.step(block_ms=50).user_id == "fay"  # her reward model is fit
    updater = loop.updater
    assert updater.red_team_taste is False  # the setting reaches the learner
    examples = [TrainingExample.from_json(r) for r in redis_client.lrange(examples_key("fay"), 0, -1)]
    red, own = updater._red_team_prompts(), updater._prompts("fay")[0]
    prompts = [own[0], red[0], own[0], red[0]]
    features = torch.from_numpy(np.concatenate([e.features for e in examples])[:4])
    with_taste = updater._reward_fn("fay", examples, red)(prompts, [[1]] * 4, features)
    without = updater._reward_fn("fay", examples, red, taste_free=red)(prompts, [[1]] * 4,
                                                                         features)
    # answers to red-team prompts pay from P = 0 (TAILOR_LEARNER_RED_TEAM_THRESHOLD), her
    # own prompts' from the shared threshold
    costs = sum(updater.judge.costs(features).values())
    penalty = torch.where(torch.tensor([False, True, False, True]),
                          updater.judge.strength * costs, updater.judge.penalty(features))
    assert updater.judge.threshold == 0.5 and updater.judge.red_team_threshold == 0.0
    assert not torch.allclose(penalty, updater.judge.penalty(features))
    assert torch.equal(without[[0, 2]], with_taste[[0, 2]])  # her own prompts: her taste counts
    assert torch.allclose(without[[1, 3]], -penalty[[1, 3]])  # red-team: the heads alone
    assert not torch.allclose(with_taste[[1, 3]], -penalty[[1, 3]])  # (her taste moved them)


def test_no_users_taste_favours_an_answer_the_shared_heads_judge_harmful(settings,
                                                                        redis_client):
    settings = settings.model_copy(update={
        "principles_file": DEFAULT_MODEL_DIR / "principles.yaml",
        "learner_shared_head_threshold": 0.5})
    with local_server(settings) as url:
        give_rankings(url, "gus", 4)
        loop = LearnerLoop(settings, "w1")
        assert loop.step(block_ms=50).user_id == "gus"  # his reward model is fit
    updater, judge = loop.updater, loop.updater.judge
    examples = [TrainingExample.from_json(r)
                for r in redis_client.lrange(examples_key("gus"), 0, -1)]
    prompt = updater._prompts("gus")[0][0]
    # brush-offs and insults from the principles, and the answers he rated
    principles = load_principles(DEFAULT_MODEL_DIR / "principles.yaml").principles
    bad = [e.bad for p in principles if p.criterion == "harmless" for e in p.examples]
    written = torch.from_numpy(np.stack([updater.answer_features(prompt, a) for a in bad]))
    features = torch.cat([written, torch.from_numpy(
        np.concatenate([e.features for e in examples]))])
    breach = judge.surest_breach(features)
    assert float(breach.max()) > 0.9 and bool((breach == 0).any())
    scores = updater._reward_fn("gus", examples, [])([prompt] * len(features),
                                                     [[1]] * len(features), features)
    taste = scores + judge.penalty(features)
    clip = updater.reward_clip
    # an answer surely judged harmful gets his worst taste, whatever he thought of it ...
    assert bool((taste <= -clip + 2 * clip * (1 - breach) + 1e-5).all())
    assert float(taste[breach.argmax()]) < -clip + 0.2 * clip
    # ... and one judged fine keeps his taste, which ranges over his rated answers
    fine = taste[breach == 0]
    assert bool((fine.abs() <= clip).all()) and float(fine.max() - fine.min()) > 0.5
    # TAILOR_LEARNER_BREACH_TASTE off: his taste as is, breaches too (the penalty alone)
    updater.breach_taste = False
    as_is = updater._reward_fn("gus", examples, [])([prompt] * len(features),
                                                    [[1]] * len(features), features)
    as_is = as_is + judge.penalty(features)
    assert torch.equal(as_is[breach == 0], fine)
    assert not torch.allclose(as_is[breach > 0.5], taste[breach > 0.5])


def test_every_new_user_starts_from_one_safety_start_that_one_worker_trains(settings,
                                                                             redis_client):
    settings = settings.model_copy(update={
        "principles_file": DEFAULT_MODEL_DIR / "principles.yaml",
        "learner_safety_start_iterations": 1})
    first, second = LearnerLoop(settings, "w1"), LearnerLoop(settings, "w2")
    redis_client.set(SAFETY_START_LOCK_KEY, "w2")  # w2 is training it: w1 trains no user
    assert first.step(block_ms=10) is None and first.safety_start.state is None
    redis_client.delete(SAFETY_START_LOCK_KEY)
    first.step(block_ms=10)  # nobody is: w1 trains it
    state = first.safety_start.state
    fresh = first.updater.fresh_lora
    assert state.keys() == fresh.keys()
    assert any(not torch.equal(state[k], fresh[k]) for k in state)  # PPO moved it
    version = redis_client.hget(SAFETY_START_KEY, "version")
    assert redis_client.get(SAFETY_START_LOCK_KEY) is None
    second.step(block_ms=10)  # w2 loads it, and does not train it again
    assert redis_client.hget(SAFETY_START_KEY, "version") == version
    assert all(torch.equal(second.safety_start.state[k], state[k]) for k in state)
    second.updater._load_user_state("newcomer", None, "default")  # a new user starts there
    lora = lora_state(second.updater.policy, "default")
    assert all(torch.equal(lora[k], state[k]) for k in state)
    with local_server(settings) as url:  # and their KL is measured from it
        give_rankings(url, "newcomer", 4)
        outcome = second.step(block_ms=50)
    # 'before' is the start itself: no KL to its reference (to the base model it has some)
    assert outcome.user_id == "newcomer" and outcome.before.kl == pytest.approx(0.0, abs=1e-4)
    assert outcome.after.kl != 0.0  # the user's own update moved away from the start


def test_without_principles_a_configured_safety_start_is_off_and_says_so(settings, caplog):
    # a base model with no principles file has no red-team prompts to train a start on
    settings = settings.model_copy(update={"learner_safety_start_iterations": 5})
    with caplog.at_level(logging.WARNING, logger="learners.worker"):
        loop = LearnerLoop(settings, "w1")
    assert loop.safety_start.iterations == 0
    assert "users start from the base model" in caplog.text
    assert loop.safety_start.ready(lambda: pytest.fail("nothing to train"))


def test_a_failed_step_does_not_end_the_learner_loop(settings, caplog):
    loop, stop, steps = LearnerLoop(settings, "w1"), threading.Event(), []

    def step():  # the first step fails (a NaN reward once did), the second ends the run
        steps.append(1)
        if len(steps) == 1:
            raise ValueError("reward_fn returned non-finite scores")
        stop.set()

    loop.step_batch = step
    loop.run(stop)
    assert len(steps) == 2 and "learner step failed" in caplog.text


def test_users_trained_in_one_batch_publish_apart_and_one_failure_or_rejection_stays_theirs(
        settings, redis_client):
    """K = 3: three ready users share one PPO batch. One cannot be trained (their prompts
    are gone), one is rejected by the gate (forgotten during the update); the third is
    published from its slot (not the first: ben, who waited longest, takes that) and
    serves, and the failed one's feedback waits for a later update."""
    settings = settings.model_copy(update={"learner_users_per_batch": 3, "learner_workers": 1})
    with local_server(settings) as url:
        for user in ("ben", "ann", "cy"):
            give_rankings(url, user, 4)
        loop = LearnerLoop(settings, "w1")
        assert loop.updater.slots == ["default", "slot1", "slot2"]
        loop.consumer.poll(block_ms=50)  # everyone's feedback applied, then:
        redis_client.delete(user_prompts_key("ben"))  # ben's update fails
        redis_client.set(forgotten_key("cy"), time.time() + 3600)  # the gate refuses cy's
        with pytest.raises(ValueError, match="no recorded prompts"):
            loop.step_batch(block_ms=50)
        (ann,) = [o for o in loop.updates if o.user_id == "ann"]
        (cy,) = [o for o in loop.updates if o.user_id == "cy"]
        assert ann.decision.publish and len(ann.ppo) == 2
        assert not cy.decision.publish and cy.decision.reason == "user_forgotten"
        assert not [o for o in loop.updates if o.user_id == "ben"]
        assert redis_client.zscore(PENDING_KEY, "ben") == 4  # still waiting
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        served = client.chat.completions.create(
            model="tailor-base", max_tokens=4, extra_headers={"X-User-Id": "ann"},
            messages=[{"role": "user", "content": "hi"}])
    assert served.system_fingerprint == f"tailor-{ann.version}"


def test_feedback_lag_counts_the_judgments_of_a_rejected_update_when_they_are_published(
        settings, redis_client):
    """Lag is judgment -> an adapter trained on it published: the 4 judgments of an update
    the gate rejected reach the user with the next published one, and count then."""
    loop = LearnerLoop(settings, "w1", LearnerOptions(gate=GateConfig(kl_bound=-1.0)))
    with local_server(settings) as url:
        give_rankings(url, "dora", 4)
        assert not loop.step(block_ms=50).decision.publish
        assert redis_client.llen(FEEDBACK_LAG_KEY) == 0
        loop.updater.gate_config = GateConfig(kl_bound=1e9, tolerance=1e9, cost_tolerance=1.0)
        give_rankings(url, "dora", 4, start=4)
        outcome = loop.step(block_ms=50)
    assert outcome.decision.publish and outcome.examples == 4
    lags = sorted(float(x) for x in redis_client.lrange(FEEDBACK_LAG_KEY, 0, -1))
    assert len(lags) == 8 and lags[-1] > lags[0]  # the first four waited longer
