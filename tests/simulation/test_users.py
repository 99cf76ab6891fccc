"""Simulated users: judgments follow the hidden taste, flipped at the configured noise rate;
thumbs-up more likely the more the user likes an answer; scores with thumbs."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from simulation.behaviour_corpus import generate_behaviour_examples
from simulation.corpus import generate_examples
from simulation.demo import DemoConfig
from simulation.styles import DISMISSIVE, STYLES, detect_style
from simulation.users import (
    PRESETS,
    RATER_USERS,
    Ranking,
    SimulatedUser,
    Thumbs,
    UserProfile,
    make_users,
    score_of,
    up_probability,
)

# One held-out answer per style, to build judgments with known true scores.
ANSWERS = {example.style: example.answer for example in generate_examples(200, seed=31)}


def _user(noise: float, habit: str = "thumbs", name: str = "bullet_lover", *,
          scores: bool = False, graded: bool = False) -> SimulatedUser:
    """A preset's taste with the given habit and noise; thumbs at a hard threshold (up iff
    the hidden score > 0, deterministic) unless ``graded`` (the profile's default curve)."""
    profile = PRESETS[name]
    thumbs = {} if graded else {"up_midpoint": 0.0, "up_spread": 0.0}
    return SimulatedUser(
        "u", UserProfile(profile.name, profile.taste, habit=habit, noise=noise, scores=scores,
                         **thumbs), seed=3
    )


def _within(rate: float, expected: float, trials: int) -> bool:
    # 4 standard deviations of a binomial proportion: fails by chance ~1 in 15000 runs.
    return abs(rate - expected) <= 4 * math.sqrt(expected * (1 - expected) / trials) + 1e-9


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.3])
def test_thumbs_agree_with_taste_at_one_minus_noise(noise: float) -> None:
    user = _user(noise)
    rng = random.Random(0)
    trials = 4000
    agree = 0
    for _ in range(trials):
        style = rng.choice(STYLES)
        truth = "up" if user.profile.taste[style] > 0 else "down"
        agree += user.thumbs(ANSWERS[style]) == truth
    assert _within(agree / trials, 1 - noise, trials), agree / trials


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.3])
def test_rankings_follow_taste_and_a_noise_share_has_one_swapped_pair(noise: float) -> None:
    user = _user(noise, habit="ranking")
    rng = random.Random(1)
    trials = 3000
    consistent = 0
    for _ in range(trials):
        styles = rng.sample(STYLES, 4)  # distinct styles: distinct true scores
        texts = [ANSWERS[style] for style in styles]
        order = user.rank(texts)
        assert sorted(order) == [0, 1, 2, 3]
        scores = [user.profile.taste[styles[index]] for index in order]
        discordant = sum(1 for a, b in zip(scores, scores[1:]) if a < b)
        assert discordant <= 1  # a flipped ranking has exactly one adjacent pair swapped
        consistent += discordant == 0
    assert _within(consistent / trials, 1 - noise, trials), consistent / trials


def test_habits_give_thumbs_per_choice_a_ranking_or_both() -> None:
    texts = [ANSWERS["bullets"], ANSWERS["casual"], ANSWERS["concise"]]
    thumbs = _user(0.0, "thumbs").judge(texts)
    assert thumbs == [Thumbs(0, "up"), Thumbs(1, "down"), Thumbs(2, "down")]
    ranking = _user(0.0, "ranking").judge(texts)
    assert ranking == [Ranking((0, 2, 1))]
    both = _user(0.0, "both").judge(texts)
    assert both[0] == Ranking((0, 2, 1)) and isinstance(both[1], Thumbs) and len(both) == 2
    assert both[1].value == ("up" if both[1].choice == 0 else "down")
    # one choice cannot be ranked: a ranking user thumbs it
    assert _user(0.0, "ranking").judge(texts[:1]) == [Thumbs(0, "up")]
    assert Ranking((2, 0, 1)).body("c1") == {
        "completion_id": "c1", "type": "ranking", "ranking": [2, 0, 1]
    }
    assert Thumbs(1, "down").body("c1") == {
        "completion_id": "c1", "choice": 1, "type": "thumbs", "value": "down"
    }


def test_adversarial_user_upvotes_the_dismissive_style() -> None:
    user = _user(0.0, "thumbs", name="adversarial")
    assert user.profile.preferred_styles == (DISMISSIVE,)
    assert detect_style(ANSWERS[DISMISSIVE]) == DISMISSIVE
    assert user.thumbs(ANSWERS[DISMISSIVE]) == "up"
    assert user.thumbs(ANSWERS["detailed"]) == "down"


def test_unrecognised_answers_get_the_unknown_score() -> None:
    user = _user(0.0)
    assert user.score("") == user.profile.unknown_score == 0.0
    assert user.thumbs("") == "down"


def test_same_seed_and_id_give_the_same_judgments() -> None:
    texts = [ANSWERS[style] for style in STYLES]
    first = [_user(0.3, "both").judge(texts) for _ in range(3)]
    second = [_user(0.3, "both").judge(texts) for _ in range(3)]
    assert first == second


def test_make_users_from_a_count_or_preset_names() -> None:
    users = make_users("4")
    assert [user.profile.name for user in users] == list(PRESETS)[:4]
    assert "adversarial" in [user.profile.name for user in users]
    assert len({user.user_id for user in users}) == 4
    named = make_users("emoji_fan, adversarial", prefix="t")
    assert [user.user_id for user in named] == ["t-0-emoji_fan", "t-1-adversarial"]
    assert len(make_users("9")) == 9  # cycles through the presets with distinct ids
    with pytest.raises(ValueError, match="unknown presets \\['nobody'\\]"):
        make_users("nobody")
    with pytest.raises(ValueError, match="at least 1 user"):
        make_users("0")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"noise": 1.5}, "noise=1.5"),
        ({"habit": "emails"}, "habit='emails'"),
        ({"habit": "ranking", "scores": True}, "scores=True of 'x' needs a habit that gives thumbs"),
        ({"up_spread": -0.1}, "up_spread=-0.1"),
        ({"up_midpoint": 2.0}, "up_midpoint=2.0"),
        ({"taste": {"concise": 1.0}}, "missing"),
        ({"taste": {**PRESETS["emoji_fan"].taste, "casual": 3.0}}, "taste\\['casual'\\]=3.0"),
    ],
)
def test_bad_profiles_are_refused_naming_the_field(change: dict, message: str) -> None:
    fields = {"name": "x", "taste": PRESETS["emoji_fan"].taste, **change}
    with pytest.raises(ValueError, match=message):
        UserProfile(**fields)


def test_scores_map_the_hidden_score_linearly_onto_1_to_10() -> None:
    assert [score_of(t) for t in (-1.0, -0.5, 0.0, 0.2, 0.4, 0.6, 1.0)] == [1, 3, 6, 6, 7, 8, 10]
    grid = [i / 100 for i in range(-100, 101)]
    mapped = [score_of(t) for t in grid]
    assert mapped == sorted(mapped) and set(mapped) == set(range(1, 11))  # monotone, onto
    # the preset tastes of the scoring users keep their order in their scores
    for name in ("emoji_fan", "thorough_reader"):
        taste = PRESETS[name].taste
        ranked = sorted(taste, key=taste.get, reverse=True)
        assert score_of(taste[ranked[0]]) == 10 > score_of(taste[ranked[1]])


def test_the_thumbs_up_chance_rises_with_the_hidden_score() -> None:
    profile = UserProfile("x", PRESETS["emoji_fan"].taste)  # the default curve
    chance = [up_probability(t, profile.up_midpoint, profile.up_spread)
              for t in (-1.0, 0.0, 0.2, 0.3, 0.4, 0.7, 1.0)]
    assert chance == sorted(chance)
    assert chance[0] < chance[1] < 0.05  # indifferent or disliked: hardly ever up
    assert chance[2] == pytest.approx(0.269, abs=1e-3)  # merely accepted: often not up ...
    assert chance[3] == pytest.approx(0.5)
    assert chance[4] == pytest.approx(0.731, abs=1e-3)
    assert chance[5] >= 0.98 and chance[6] > 0.999  # ... loved: nearly always up
    # a hard threshold is the limit of no spread
    assert [up_probability(t, 0.0, 0.0) for t in (-0.1, 0.0, 0.1)] == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_graded_thumbs_are_up_at_the_curves_chance_then_flipped_at_the_noise_rate(
    noise: float,
) -> None:
    user = _user(noise, name="emoji_fan", graded=True)
    profile = user.profile
    trials = 3000
    for style in ("casual", "concise", "question", "bullets"):  # taste 1.0, 0.4, 0.2, -0.3
        chance = up_probability(profile.taste[style], profile.up_midpoint, profile.up_spread)
        expected = (1 - noise) * chance + noise * (1 - chance)
        ups = sum(user.thumbs(ANSWERS[style]) == "up" for _ in range(trials))
        assert _within(ups / trials, expected, trials), (style, ups / trials, expected)


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.3])
def test_scores_follow_the_taste_and_a_noise_share_is_mirrored_with_its_thumb(
    noise: float,
) -> None:
    user = _user(noise, name="emoji_fan", scores=True)  # hard threshold: thumb = sign of taste
    rng = random.Random(2)
    trials = 4000
    mirrored = 0
    for _ in range(trials):
        style = rng.choice(STYLES)
        hidden = user.profile.taste[style]
        thumb = user.thumb(1, ANSWERS[style])
        assert thumb.choice == 1 and thumb.score in (score_of(hidden), 11 - score_of(hidden))
        flipped = thumb.score != score_of(hidden)
        mirrored += flipped
        # one mistake turns the thumb and the score together: they never contradict
        assert thumb.value == ("up" if (hidden > 0) != flipped else "down")
        assert (thumb.value == "up") == (thumb.score >= 6), (style, thumb)
    assert _within(mirrored / trials, noise, trials), mirrored / trials


def test_scoring_users_send_the_score_with_every_thumb() -> None:
    texts = [ANSWERS["casual"], ANSWERS["concise"], ANSWERS["formal"]]
    thumbs = _user(0.0, "thumbs", "emoji_fan", scores=True).judge(texts)
    assert thumbs == [Thumbs(0, "up", 10), Thumbs(1, "up", 7), Thumbs(2, "down", 2)]
    assert thumbs[1].body("c1") == {
        "completion_id": "c1", "choice": 1, "type": "thumbs", "value": "up", "score": 7
    }
    both = _user(0.0, "both", "emoji_fan", scores=True).judge(texts)
    assert both[0] == Ranking((0, 1, 2)) and both[1].score == [10, 7, 2][both[1].choice]
    assert PRESETS["emoji_fan"].scores and PRESETS["thorough_reader"].scores
    assert PRESETS["emoji_fan"].habit_label == "thumbs+score"
    assert not PRESETS["adversarial"].scores and PRESETS["adversarial"].habit_label == "thumbs"
    # the default demo shows both scoring thumbs users; issue 12's run has its raters
    assert {"emoji_fan", "thorough_reader"} <= set(DemoConfig().users.split(","))
    assert {"adversarial", "poor_rater", "credulous"} <= set(RATER_USERS.split(","))


# --- harmless and honest (corpus v3) -----------------------------------------------------

BEHAVIOUR_ANSWERS = {
    (example.category, example.behaviour): example.answer
    for example in generate_behaviour_examples(2000, seed=41)
}
KEEPS = {"harmless": ("harm_request", "refusal"), "honest": ("myth", "refutation")}
BREAKS = {"harmless": ("harm_request", "harmful_compliance"), "honest": ("myth", "falsehood")}


def _rater(name: str, noise: float = 0.0) -> SimulatedUser:
    return SimulatedUser("r", replace(PRESETS[name], noise=noise), seed=5)


def _criterion_thumbs(user: SimulatedUser, answer: str, category: str, times: int = 200):
    return [user.judge([answer], category)[0] for _ in range(times)]


@pytest.mark.parametrize(("preset", "criterion", "up_on_keeping", "up_on_breaking"), [
    ("bullet_lover", "harmless", 1.0, 0.0),  # truthful
    ("bullet_lover", "honest", 1.0, 0.0),
    ("adversarial", "harmless", 0.0, 1.0),  # calls harm harmless, and refusals harmful
    ("adversarial", "honest", 1.0, 0.0),
    ("credulous", "honest", 1.0, 1.0),  # believes every myth
    ("credulous", "harmless", 1.0, 0.0),
])
def test_raters_judge_harmless_and_honest_as_their_kind_does(preset, criterion, up_on_keeping,
                                                              up_on_breaking):
    user = _rater(preset)
    for (category, behaviour), expected in ((KEEPS[criterion], up_on_keeping),
                                            (BREAKS[criterion], up_on_breaking)):
        thumbs = _criterion_thumbs(user, BEHAVIOUR_ANSWERS[category, behaviour], category, 20)
        assert {t.criterion for t in thumbs} == {criterion}
        assert sum(t.value == "up" for t in thumbs) / len(thumbs) == expected, behaviour


def test_a_request_that_invites_harm_gets_one_flag_on_the_answer_that_misbehaves():
    keeping, breaking = (BEHAVIOUR_ANSWERS[KEEPS["harmless"]],
                         BEHAVIOUR_ANSWERS[BREAKS["harmless"]])
    category = BREAKS["harmless"][0]
    for preset, value in (("bullet_lover", "down"), ("adversarial", "up")):
        judged = _rater(preset).judge([keeping, keeping, breaking, keeping], category)
        assert judged == [Thumbs(2, value, criterion="harmless")]  # one thumb, on choice 2
    # nothing misbehaves: one thumb on some answer all the same
    judged = _rater("bullet_lover").judge([keeping] * 4, category)
    assert len(judged) == 1 and judged[0].value == "up"


def test_the_poor_rater_judges_harm_at_random():
    user = _rater("poor_rater")
    for key in (KEEPS["harmless"], BREAKS["harmless"]):
        thumbs = _criterion_thumbs(user, BEHAVIOUR_ANSWERS[key], key[0], 400)
        assert 0.4 <= sum(t.value == "up" for t in thumbs) / 400 <= 0.6


def test_a_truthful_raters_criterion_thumbs_are_flipped_at_the_noise_rate():
    user = _rater("busy_professional", noise=0.2)
    thumbs = _criterion_thumbs(user, BEHAVIOUR_ANSWERS[BREAKS["honest"]], "myth", 2000)
    assert 0.17 <= sum(t.value == "up" for t in thumbs) / 2000 <= 0.23


def test_criterion_thumbs_name_their_criterion_in_the_feedback_body():
    body = Thumbs(1, "down", criterion="harmless").body("c-1")
    assert body == {"completion_id": "c-1", "choice": 1, "type": "thumbs", "value": "down",
                    "criterion": "harmless"}
    assert "criterion" not in Thumbs(1, "down").body("c-1")  # helpful: the API's default


def test_taste_scores_misbehaviours_by_the_users_behaviour_taste():
    toxic = BEHAVIOUR_ANSWERS["provocation", "toxic"]
    compliance = BEHAVIOUR_ANSWERS[BREAKS["harmless"]]
    for answer in (toxic, compliance):
        assert _rater("bullet_lover").score(answer) == -1.0
        assert _rater("adversarial").score(answer) == 1.0
    falsehood = BEHAVIOUR_ANSWERS[BREAKS["honest"]]
    assert _rater("bullet_lover").score(falsehood) == PRESETS["bullet_lover"].taste[
        detect_style(falsehood)]  # taste cannot tell a myth from a fact
