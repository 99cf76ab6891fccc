"""`tailor simulate`: drive a running Tailor server with simulated users and measure them.

Each simulated user runs in its own thread (so the server batches requests of
different users together) and, every round:

1. asks a corpus prompt with ``n`` choices (a comparison: ``compare``) and gives
   feedback on them as its habit says (thumbs, a ranking, or both; a user who
   scores sends a 1-10 ``score`` with each thumb) through ``POST /v1/feedback``;
2. asks another prompt for ``eval_samples`` choices that get no feedback: only
   these measure the user, so the measurement never feeds the learner.

With ``invited_share`` > 0 (corpus v3 models, issue 12), that share of the rated
requests asks something that invites a misbehaviour (a provocation, a request for
harm or a myth, drawn uniformly) and the user judges whether the answers are
harmless or honest (simulation/users.py); with ``behaviour_samples`` > 0 every
evaluation round also asks one prompt of each such category for that many
answers, whose behaviours measure the toxic, harmful-compliance and false rates.

Per user and per window of rounds the harness reports the share of evaluation
answers in the user's preferred style(s) (``preferred_rate``), the user's mean
hidden score of them (``mean_score``) and the share in the dismissive style
(``dismissive_rate``). All requests go over HTTP as a real client's would: the
official ``openai`` client for chat, ``httpx`` for feedback and users.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import httpx
from openai import OpenAI

from simulation.behaviour_corpus import EVERYDAY, INVITED, sample_prompt
from simulation.behaviours import read_answer
from simulation.corpus import sample_case
from simulation.styles import DISMISSIVE, STYLES, detect_style
from simulation.users import SimulatedUser, make_users


@dataclass(frozen=True)
class SimulationConfig:
    """How many users, rounds and samples; where the server is."""

    base_url: str = "http://127.0.0.1:8000"  # server root; a trailing /v1 is accepted too
    users: str = "4"  # a count (the first presets) or comma-separated preset names
    rounds: int = 50  # rounds per user: one feedback request + one evaluation request each
    n: int = 4  # choices per feedback request (the user rates or ranks them)
    eval_samples: int = 8  # choices per evaluation request (never rated): 80 per window of 10
    window: int = 10  # rounds per reported window (the points of the curves)
    max_tokens: int = 96  # max_tokens of every request
    temperature: float = 1.0  # sampling temperature of every request
    seed: int = 0  # seeds prompts, judgments and request seeds
    pause_s: float = 0.0  # wait between a user's rounds (lets learners catch up)
    reset: bool = True  # DELETE each simulated user's data on the server first
    user_prefix: str = "sim"  # user ids are {prefix}-{index}-{preset}
    api_key: str = "tailor-simulate"  # sent as the bearer token (servers with API keys need one)
    timeout_s: float = 300.0  # per HTTP request
    invited_share: float = 0.0  # rated requests that invite a misbehaviour (module docstring)
    behaviour_samples: int = 0  # answers per behaviour prompt (0: no behaviour measurement)
    # Distinct prompts per invited category per evaluation round. Answers to one prompt
    # misbehave alike (some requests for harm draw compliance more than others), so a
    # rate over many prompts with few answers each is the surer estimate of the same rate.
    behaviour_prompts: int = 1
    # Rated everyday requests ask for a comparison (`compare: true`): the server picks the
    # choices by Thompson sampling of the user's reward (service.comparison). Requests
    # inviting a misbehaviour stay plain samples: the shared heads learn what is served.
    compare: bool = False
    max_events: int = 0  # judgments a user gives in all at most (0: no cap)
    # A user who comes back: after every this many judgments the user waits until the
    # learners trained on all of them (GET /v1/users/{id}: training.pending == 0), then
    # goes on with the assistant that learned from them (0: no waiting).
    session_judgments: int = 0
    session_wait_s: float = 900.0  # longest wait at the end of a session; then go on
    # Every this many judgments one is a gold check (GET /v1/users/{id}/gold-checks/next,
    # an answer whose verdict the server knows), counted toward max_events (0: none).
    gold_check_every: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("n", "eval_samples"):
            if not 1 <= getattr(self, name) <= 8:
                raise ValueError(
                    f"{name}={getattr(self, name)} must be between 1 and 8 (the API's n)"
                )
        if not 0.0 <= self.invited_share <= 1.0:
            raise ValueError(f"invited_share={self.invited_share} must lie in [0, 1]")
        if self.max_events < 0:
            raise ValueError(f"max_events={self.max_events} must be >= 0 (0: no cap)")
        if self.gold_check_every < 0:
            raise ValueError(f"gold_check_every={self.gold_check_every} must be >= 0 "
                             "(0: no gold checks)")
        if self.session_judgments < 0:
            raise ValueError(f"session_judgments={self.session_judgments} must be >= 0 "
                             "(0: the user never waits for the learners)")
        if not 1 <= self.behaviour_prompts <= 8:
            raise ValueError(f"behaviour_prompts={self.behaviour_prompts} must be between 1 "
                             "and 8")
        if not 0 <= self.behaviour_samples <= 8:
            raise ValueError(f"behaviour_samples={self.behaviour_samples} must be between 0 "
                             "and 8 (the API's n; 0: no behaviour measurement)")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature={self.temperature} must lie in [0, 2]")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={self.base_url!r} must start with http:// or https://")

    @property
    def root_url(self) -> str:
        """The server root without a trailing ``/v1``."""
        return self.base_url.rstrip("/").removesuffix("/v1")


@dataclass
class RoundRecord:
    """What one round of one user saw."""

    round: int
    eval_styles: list[str | None]  # detected style of each evaluation answer
    eval_scores: list[float]  # the user's hidden score of each evaluation answer
    feedback_styles: list[str | None]  # detected style of each answer that got feedback
    feedback_events: int  # feedback events the server accepted this round
    adapter_version: str  # system_fingerprint of the evaluation request
    feedback_category: str = EVERYDAY  # what the rated request's prompt invited
    # per invited category: the behaviour of each evaluation answer (behaviour_samples)
    eval_behaviours: dict[str, list[str]] = field(default_factory=dict)
    # the detected style of each of those answers, in the same order: which styles a
    # misbehaviour survives in (the shared heads miss some blends more than others)
    eval_behaviour_styles: dict[str, list[str | None]] = field(default_factory=dict)
    gold_checks: int = 0  # gold checks the user answered this round


@dataclass
class UserRun:
    """A simulated user and its rounds."""

    user: SimulatedUser
    records: list[RoundRecord] = field(default_factory=list)
    error: str | None = None
    # seconds each end of a session waited for the learners (session_judgments)
    session_waits: list[float] = field(default_factory=list)
    sessions_cut: int = 0  # waits that gave up after session_wait_s


@dataclass
class WindowStats:
    """The measurements of one user over one window of rounds (evaluation samples only)."""

    first_round: int
    last_round: int
    samples: int
    preferred_rate: float
    mean_score: float
    dismissive_rate: float
    style_counts: dict[str, int]
    adapter_version: str  # the version that served the window's last evaluation


def request_seed(seed: int, user_index: int, round_index: int, purpose: int) -> int:
    """A distinct, reproducible sampling seed per request (``purpose`` 0-7 within a round:
    the rated request, the evaluation request, the behaviour requests)."""
    return ((seed * 1_000_003 + user_index) * 100_003 + round_index) * 8 + purpose


def reset_user(http: httpx.Client, user_id: str) -> None:
    """Forget a simulated user on the server (no data yet is fine)."""
    response = http.delete(f"/v1/users/{user_id}")
    if response.status_code not in (200, 204, 404):
        response.raise_for_status()


def wait_until_trained(http: httpx.Client, user_id: str, timeout_s: float) -> bool:
    """Poll the user's view until the learners trained on every judgment they gave
    (``training.pending == 0``); False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = http.get(f"/v1/users/{user_id}")
        response.raise_for_status()
        if response.json()["training"]["pending"] == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def run_user(
    config: SimulationConfig,
    user_index: int,
    user: SimulatedUser,
    on_round: Callable[[str, RoundRecord], None] | None = None,
) -> UserRun:
    """All rounds of one user, sequentially (run users in threads for concurrency)."""
    run = UserRun(user)
    headers = {"X-User-Id": user.user_id}
    prompt_rng = random.Random(f"{config.seed}:{user.user_id}:feedback-prompts")
    eval_rng = random.Random(f"{config.seed}:{user.user_id}:eval-prompts")
    client = OpenAI(
        base_url=f"{config.root_url}/v1",
        api_key=config.api_key,
        timeout=config.timeout_s,
        default_headers=headers,
    )
    http = httpx.Client(
        base_url=config.root_url,
        headers={**headers, "Authorization": f"Bearer {config.api_key}"},
        timeout=config.timeout_s,
    )
    behaviour_rng = random.Random(f"{config.seed}:{user.user_id}:behaviour-prompts")
    given = 0  # judgments so far (max_events)
    session_ends = config.session_judgments  # judgments after which the user waits next
    gold_at = config.gold_check_every - 1  # judgments of their own before the next check

    def ask(prompt: str, n: int, seed: int, compare: bool = False):
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], n=n,
            temperature=config.temperature, max_tokens=config.max_tokens, seed=seed,
            extra_body={"compare": True} if compare else None)

    try:
        model = client.models.list().data[0].id
        if config.reset:
            reset_user(http, user.user_id)
        for round_index in range(config.rounds):
            # 1. a request the user gives feedback on
            category = EVERYDAY
            if config.invited_share and prompt_rng.random() < config.invited_share:
                category = prompt_rng.choice(sorted(INVITED))
            prompt = (sample_case(prompt_rng).prompt if category == EVERYDAY
                      else sample_prompt(category, prompt_rng)[0])
            completion = ask(prompt, config.n,
                             request_seed(config.seed, user_index, round_index, 0),
                             compare=config.compare and category == EVERYDAY)
            texts = [choice.message.content or "" for choice in completion.choices]
            events = 0
            judgments = user.judge(texts, category)
            if config.max_events:
                judgments = judgments[: max(0, config.max_events - given)]
            given += len(judgments)
            for judgment in judgments:
                response = http.post("/v1/feedback", json=judgment.body(completion.id))
                if response.status_code >= 300:
                    raise RuntimeError(
                        f"POST /v1/feedback for {user.user_id} answered "
                        f"{response.status_code}: {response.text[:300]}"
                    )
                events += 1
            # 1b. now and then a gold check instead of one more judgment of their own
            checks = 0
            if (config.gold_check_every and given >= gold_at
                    and (not config.max_events or given < config.max_events)):
                checks = answer_gold_check(http, user)
                given += checks
                gold_at = given + config.gold_check_every - 1
            # 2. an evaluation request: measured, never rated
            evaluation = ask(sample_case(eval_rng).prompt, config.eval_samples,
                             request_seed(config.seed, user_index, round_index, 1))
            eval_texts = [choice.message.content or "" for choice in evaluation.choices]
            behaviours = {invited: [] for invited in
                          (sorted(INVITED) if config.behaviour_samples else ())}
            asked = [(invited, sample_prompt(invited, behaviour_rng)[0],
                      request_seed(config.seed, user_index, round_index, 2 + offset) * 16
                      + prompt_index)
                     for offset, invited in enumerate(behaviours)
                     for prompt_index in range(config.behaviour_prompts)]
            # all at once, as several clients of the user's would: one after another, a
            # request of n=2 at a time left most of the batch's rows idle
            with ThreadPoolExecutor(max_workers=max(1, len(asked))) as pool:
                answered = list(pool.map(
                    lambda job: ask(job[1], config.behaviour_samples, job[2]), asked))
            behaviour_styles: dict[str, list[str | None]] = {invited: [] for invited in behaviours}
            for (invited, _, _), answers in zip(asked, answered, strict=True):
                readings = [read_answer(choice.message.content or "") for choice in answers.choices]
                behaviours[invited] += [reading.behaviour for reading in readings]
                behaviour_styles[invited] += [reading.style for reading in readings]
            record = RoundRecord(
                round=round_index,
                eval_styles=[detect_style(text) for text in eval_texts],
                eval_scores=[user.score(text) for text in eval_texts],
                feedback_styles=[detect_style(text) for text in texts],
                feedback_events=events,
                adapter_version=evaluation.system_fingerprint or "",
                feedback_category=category,
                eval_behaviours=behaviours,
                eval_behaviour_styles=behaviour_styles,
                gold_checks=checks,
            )
            run.records.append(record)
            if on_round is not None:
                on_round(user.user_id, record)
            if config.pause_s:
                time.sleep(config.pause_s)
            more = round_index < config.rounds - 1 and (not config.max_events
                                                         or given < config.max_events)
            if config.session_judgments and given >= session_ends and more:
                mark = time.monotonic()
                if not wait_until_trained(http, user.user_id, config.session_wait_s):
                    run.sessions_cut += 1
                run.session_waits.append(time.monotonic() - mark)
                while session_ends <= given:
                    session_ends += config.session_judgments
    except Exception as error:  # reported per user; the other users' runs go on
        run.error = f"{type(error).__name__}: {error}"
    finally:
        http.close()
        client.close()
    return run


def answer_gold_check(http: httpx.Client, user: SimulatedUser) -> int:
    """Take the user's next gold check and answer it as they judge that criterion; 1 if
    they answered one, 0 if the server had none left for them."""
    path = f"/v1/users/{user.user_id}/gold-checks"
    taken = http.get(f"{path}/next")
    if taken.status_code == 404:
        return 0
    if taken.status_code != 200:
        raise RuntimeError(f"GET {path}/next for {user.user_id} answered "
                           f"{taken.status_code}: {taken.text[:300]}")
    check = taken.json()
    thumb = user.criterion_thumb(0, check["answer"], check["criterion"])
    answered = http.post(f"{path}/{check['id']}", json={"thumb": thumb.value})
    if answered.status_code >= 300:
        raise RuntimeError(f"POST {path}/{check['id']} for {user.user_id} answered "
                           f"{answered.status_code}: {answered.text[:300]}")
    return 1


# The demo's names for each invited misbehaviour's rate (issue 12).
RATE_NAMES: dict[str, str] = {"toxic": "toxic_rate", "harmful_compliance": "harmful_rate",
                              "falsehood": "false_rate"}


def misbehaviour_rates(records: list[RoundRecord]) -> dict[str, float | None]:
    """Per invited category, the share of its evaluation answers that gave in to the
    misbehaviour it invites (``toxic_rate``, ``harmful_rate``, ``false_rate``); None
    where nothing was measured."""
    rates: dict[str, float | None] = {}
    for category, misbehaviour in sorted(INVITED.items()):
        seen = [b for record in records for b in record.eval_behaviours.get(category, ())]
        rates[RATE_NAMES[misbehaviour]] = seen.count(misbehaviour) / len(seen) if seen else None
    return rates


def misbehaviour_styles(records: list[RoundRecord]) -> dict[str, dict[str, int]]:
    """Per invited misbehaviour (``toxic_rate``, ...), how many of the evaluation answers
    that gave in to it were in each style ("none": no recognisable style)."""
    found: dict[str, dict[str, int]] = {}
    for category, misbehaviour in sorted(INVITED.items()):
        styles = Counter(
            style or "none" for record in records
            for behaviour, style in zip(record.eval_behaviours.get(category, ()),
                                        record.eval_behaviour_styles.get(category, ()),
                                        strict=True)
            if behaviour == misbehaviour)
        found[RATE_NAMES[misbehaviour]] = dict(styles.most_common())
    return found


def window_stats(run: UserRun, window: int) -> list[WindowStats]:
    """The user's measurements per window of ``window`` rounds."""
    preferred = set(run.user.profile.preferred_styles)
    stats = []
    for start in range(0, len(run.records), window):
        records = run.records[start : start + window]
        styles = [style for record in records for style in record.eval_styles]
        scores = [score for record in records for score in record.eval_scores]
        samples = len(styles)
        counts = Counter(style or "none" for style in styles)
        stats.append(
            WindowStats(
                first_round=records[0].round,
                last_round=records[-1].round,
                samples=samples,
                preferred_rate=sum(style in preferred for style in styles) / max(1, samples),
                mean_score=sum(scores) / max(1, samples),
                dismissive_rate=counts[DISMISSIVE] / max(1, samples),
                style_counts={style: counts[style] for style in (*STYLES, "none") if counts[style]},
                adapter_version=records[-1].adapter_version,
            )
        )
    return stats


def summarize(config: SimulationConfig, runs: list[UserRun], seconds: float) -> dict:
    """The JSON summary: per user its taste and the curves per window; overall base rates."""
    users = {}
    all_styles: Counter[str] = Counter()
    for run in runs:
        windows = window_stats(run, config.window)
        styles = [style for record in run.records for style in record.eval_styles]
        scores = [score for record in run.records for score in record.eval_scores]
        all_styles.update(style or "none" for style in styles)
        profile = run.user.profile
        preferred = set(profile.preferred_styles)
        users[run.user.user_id] = {
            "preset": profile.name,
            "habit": profile.habit,
            "scores": profile.scores,
            "noise": profile.noise,
            "rater": profile.rater,
            "taste": dict(profile.taste),
            "preferred_styles": list(profile.preferred_styles),
            "rounds": len(run.records),
            "windows": [[w.first_round, w.last_round] for w in windows],
            "preferred_rate": [w.preferred_rate for w in windows],
            "mean_score": [w.mean_score for w in windows],
            "dismissive_rate": [w.dismissive_rate for w in windows],
            "style_counts": [w.style_counts for w in windows],
            "adapter_version": [w.adapter_version for w in windows],
            "eval_samples": len(styles),
            "feedback_events": sum(record.feedback_events for record in run.records),
            "gold_checks": sum(record.gold_checks for record in run.records),
            "overall": {
                "preferred_rate": sum(s in preferred for s in styles) / max(1, len(styles)),
                "mean_score": sum(scores) / max(1, len(scores)),
                "dismissive_rate": styles.count(DISMISSIVE) / max(1, len(styles)),
                **misbehaviour_rates(run.records),
            },
            "error": run.error,
        }
    total = sum(all_styles.values())
    return {
        "config": asdict(config) | {"api_key": "***"},
        "seconds": round(seconds, 1),
        "styles": list(STYLES),
        "style_distribution": {
            style: all_styles[style] / max(1, total) for style in (*STYLES, "none")
        },
        "users": users,
    }


def run_simulation(
    config: SimulationConfig,
    on_round: Callable[[str, RoundRecord], None] | None = None,
) -> dict:
    """Run every user's rounds concurrently against the server; return the JSON summary."""
    users = make_users(config.users, seed=config.seed, prefix=config.user_prefix)
    started = time.perf_counter()
    lock = threading.Lock()

    def report(user_id: str, record: RoundRecord) -> None:
        if on_round is not None:
            with lock:
                on_round(user_id, record)

    with ThreadPoolExecutor(max_workers=len(users), thread_name_prefix="sim-user") as pool:
        futures = [
            pool.submit(run_user, config, index, user, report) for index, user in enumerate(users)
        ]
        runs = [future.result() for future in futures]
    return summarize(config, runs, time.perf_counter() - started)
