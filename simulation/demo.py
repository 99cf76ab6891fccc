"""`tailor demo`: the whole loop on one machine — serve, learn from simulated users, measure.

1. **start**: `tailor up` (redis-server, Ray, the Serve app, the learner workers) as
   a child process, on free ports with a data folder of its own;
2. **before**: each simulated user's base rates, from evaluation requests sent while
   the user has no adapter (the user as an observer who asks and never rates);
3. **feedback**: each user gives at most ``max_events`` judgments through the API
   (rounds = max_events // judgments per round of its habit: a thumbs user rates
   all ``n`` choices, a ranking user gives one ranking, "both" gives two), on
   other prompts than the measured ones, while the learners train; with
   ``session_judgments`` in sessions, each user waiting at a session's end until
   the learners trained on it (``simulation.harness.wait_until_trained``);
4. **catch-up**: wait until the learners have applied every event and finished the
   idle-time refines of each user (`learners.worker.LearnerOptions.refine_updates`);
5. **after**: the before-phase requests again (same prompts, same sampling seeds),
   now served with each user's adapter; evaluation answers are never rated;
6. **report**: the before/after table, a JSON summary and a PNG of each user's curve.
   Per user: the preferred-style rate, the dismissive rate and the mean hidden score
   before -> after, and the share of the possible gain in its own hidden score
   (`gain_share`): how far the adapter went from the base model's mean score toward
   the best the user could be served (its favourite style every time).

The simulated users, the requests and the measurements are `simulation.harness`'s.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from safetensors.torch import load as load_tensors

from contracts.feedback_lag import lag_quantile
from contracts.keys import (
    FEEDBACK_GROUP,
    FEEDBACK_LAG_KEY,
    FEEDBACK_STREAM,
    PENDING_KEY,
    REFINE_KEY,
    SHARED_HEADS_WEIGHTS_KEY,
    user_key,
    worker_status_key,
)
from contracts.records import SHARED_CRITERIA
from contracts.settings import Settings
from simulation.harness import (
    RATE_NAMES,
    RoundRecord,
    SimulationConfig,
    UserRun,
    misbehaviour_rates,
    misbehaviour_styles,
    run_user,
    summarize,
)
from simulation.head_accuracy import measure_heads
from simulation.plots import plot_curves
from simulation.users import DEMO_USERS, SimulatedUser, make_users

console = Console()
PHASES = ("before", "feedback", "after")


def free_port() -> int:
    """A TCP port free now on the loopback (the stack's HTTP and Redis ports)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; every count is per simulated user."""

    users: str = DEMO_USERS  # presets (or a count of the first ones)
    max_events: int = 60  # judgments each user gives at most (the budget)
    # rated requests that invite a misbehaviour, judged harmless / honest (issue 12; the
    # shipped v2 model has none to invite: 0.3 with a v3 model and RATER_USERS)
    invited_share: float = 0.0
    n: int = 4  # choices per rated request
    measure_rounds: int = 10  # evaluation requests before and after (eval_samples answers each)
    eval_samples: int = 8  # answers per evaluation request of the before/after phases
    # The eval_samples answers per invited category and measured round are spread over
    # this many prompts (simulation.harness: answers to one prompt misbehave alike)
    behaviour_prompts: int = 4
    feedback_eval_samples: int = 2  # answers per evaluation request during feedback (the curve)
    window: int = 5  # rounds per point of the curves
    # Judgments per session of each user: at its end the user waits until the learners
    # trained on everything they said, and the next session is served by the adapter
    # that learned from it (0: all judgments at once, as fast as the server answers).
    session_judgments: int = 0
    seed: int = 0  # prompts, judgments and sampling seeds
    catch_up_timeout_s: float = 600.0  # longest wait for the learners after the feedback phase
    start_timeout_s: float = 300.0  # longest wait for `tailor up`
    data_dir: Path | None = None  # the stack's data folder (default: a fresh one under /tmp)
    # False: the ablation, every rater taken at their word by the shared heads
    rater_reliability: bool = True
    # rated everyday requests ask for a comparison the server chooses (compare: true)
    compare: bool = False
    # every this many judgments one is a gold check, an answer whose verdict the server
    # knows (contracts.gold_checks), within max_events (0: none)
    gold_check_every: int = 0

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError(f"max_events={self.max_events}: give at least 1 judgment per user")
        if self.measure_rounds < 1:
            raise ValueError(f"measure_rounds={self.measure_rounds}: measure at least 1 round")
        if self.session_judgments < 0:
            raise ValueError(f"session_judgments={self.session_judgments}: use 0 (no "
                             "sessions) or the judgments a user gives before waiting")
        if self.behaviour_prompts < 1 or self.eval_samples % self.behaviour_prompts:
            raise ValueError(f"behaviour_prompts={self.behaviour_prompts} must divide "
                             f"eval_samples={self.eval_samples}")
        if self.gold_check_every < 0:
            raise ValueError(f"gold_check_every={self.gold_check_every}: use 0 (no gold "
                             "checks) or the judgments per gold check")
        make_users(self.users)  # names the unknown preset, if any


@dataclass
class Observer(SimulatedUser):
    """The same simulated user, measuring only: it asks and never rates."""

    def judge(self, texts: list[str], category: str | None = None) -> list:
        return []


def rounds_for(user: SimulatedUser, max_events: int, n: int) -> int:
    """Feedback rounds enough for ``max_events`` judgments of the user's habit (the
    harness stops the judgments at the budget; a round that invites a misbehaviour
    takes one thumb, so a user who thumbs every choice gives fewer)."""
    per_round = {"thumbs": n, "ranking": 1, "both": 2}[user.profile.habit] if n > 1 else 1
    return max(1, max_events // per_round)


# --- the stack ---------------------------------------------------------------------------


class Stack:
    """`tailor up` as a child process on free ports, with its own data folder."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env or {}  # settings of the stack (TAILOR_...) on top of ours
        self.port = free_port()
        self.redis_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "tailor-up.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float) -> redis.Redis:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TAILOR_REDIS_URL")}
        env |= {"TAILOR_DATA_DIR": str(self.data_dir), "TAILOR_PORT": str(self.port),
                "TAILOR_REDIS_PORT": str(self.redis_port), "RAY_AUTH_MODE": "disabled",
                "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                # every line in the log: Ray folds repeated ones ("[repeated 3x]"), and
                # the learners' per-iteration lines look alike to it
                "RAY_DEDUP_LOGS": "0"} | self.env
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "up"], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        client = redis.Redis(port=self.redis_port)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`tailor up` exited with {self.process.returncode}; "
                                   f"see {self.log_path}")
            if self._serving() and self._learners_ready(client):
                return client
            time.sleep(1.0)
        raise TimeoutError(f"`tailor up` was not ready in {timeout_s:.0f} s; see {self.log_path}")

    def _serving(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/v1/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @staticmethod
    def _learners_ready(client: redis.Redis) -> bool:
        try:
            return bool(client.keys(worker_status_key("*")))
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        """Ctrl-C for `tailor up` (it stops learners, Serve, Ray and Redis), then harder."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


# --- the learners' state --------------------------------------------------------------------


def learners_caught_up(client: redis.Redis, min_feedback: int) -> bool:
    """Every feedback event applied and trained on (or too few for an update), every
    refine done, every worker idle."""
    groups = {_text(g["name"]): g for g in client.xinfo_groups(FEEDBACK_STREAM)}
    group = groups.get(FEEDBACK_GROUP)
    if group is None or group["pending"] or (group.get("lag") or 0):
        return False
    if client.zcount(PENDING_KEY, min_feedback, "+inf") or client.zcard(REFINE_KEY):
        return False
    states = [client.hget(key, "state") for key in client.keys(worker_status_key("*"))]
    return all(state == b"idle" for state in states)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def wait_for_learners(client: redis.Redis, min_feedback: int, timeout_s: float) -> bool:
    """Poll until `learners_caught_up` holds twice in a row (a second apart)."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    while time.monotonic() < deadline:
        streak = streak + 1 if learners_caught_up(client, min_feedback) else 0
        if streak >= 2:
            return True
        time.sleep(1.0)
    return False


def learner_view(client: redis.Redis, user_id: str) -> dict:
    """What the learners published for ``user_id`` (the last accepted update's metrics)."""
    raw = {k.decode(): v.decode() for k, v in client.hgetall(user_key(user_id)).items()}

    def number(name: str) -> float | None:
        return float(raw[name]) if name in raw else None

    return {"adapter_version": raw.get("adapter_version"), "kl": number("learner_kl"),
            "reliability": {c: number(f"learner_reliability_{c}") for c in SHARED_CRITERIA},
            "population_weight": number("learner_population_weight"),
            "shared_judgments_used": {c: int(number(f"learner_shared_judgments_{c}") or 0)
                                      for c in SHARED_CRITERIA},
            "gold_checks_used": {c: int(number(f"learner_gold_checks_{c}") or 0)
                                 for c in SHARED_CRITERIA},
            "ppo_seconds": number("learner_ppo_seconds"), "reward": number("learner_reward"),
            "reward_accuracy": number("learner_reward_accuracy"),
            "last_decision": raw.get("learner_last_decision"),
            "updates": {k.removeprefix("learner_"): int(v) for k, v in raw.items()
                        if k == "learner_published" or k.startswith("learner_rejected_")}}


# --- the phases ---------------------------------------------------------------------------


def run_phase(configs: list[SimulationConfig], users: list[SimulatedUser],
              on_round=None) -> list[UserRun]:
    """Each user's rounds (``configs[i]`` for ``users[i]``) concurrently, as `tailor simulate`."""
    with ThreadPoolExecutor(max_workers=len(users), thread_name_prefix="demo-user") as pool:
        futures = [pool.submit(run_user, config, index, user, on_round)
                   for index, (config, user) in enumerate(zip(configs, users, strict=True))]
        runs = [future.result() for future in futures]
    failed = {run.user.user_id: run.error for run in runs if run.error}
    if failed:
        raise RuntimeError(f"simulated users stopped early: {failed}")
    return runs


def gain_share(before: float, after: float, best: float) -> float | None:
    """The share of the possible gain in a user's mean hidden score the adapter achieved:
    (after − before) / (best − before), where ``best`` is the user's top taste value (the
    mean score of being served its favourite style every time). 1: all of it; 0: none;
    negative: worse than the base model. None when the base model already gave the best."""
    room = best - before
    return None if room <= 1e-9 else (after - before) / room


def _rates(records: list[RoundRecord], preferred: set[str]) -> dict[str, float]:
    styles = [style for record in records for style in record.eval_styles]
    scores = [score for record in records for score in record.eval_scores]
    count = max(1, len(styles))
    return {"preferred_rate": sum(s in preferred for s in styles) / count,
            "dismissive_rate": styles.count("dismissive") / count,
            "mean_score": sum(scores) / max(1, len(scores)), "samples": len(styles),
            **misbehaviour_rates(records)}


def run_demo(config: DemoConfig, json_path: Path | None = None, png_path: Path | None = None,
             progress: bool = True) -> dict:
    """Run the demo (see the module docstring); return the JSON summary (also written)."""
    started = time.monotonic()
    data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="tailor-demo-", dir="/tmp"))
    json_path = json_path or data_dir / "demo.json"
    png_path = png_path or data_dir / "demo.png"
    users = make_users(config.users, seed=config.seed, prefix="demo")
    observers = [Observer(u.user_id, u.profile, u.seed) for u in users]
    base = SimulationConfig(users=config.users, n=config.n, window=config.window,
                            seed=config.seed, user_prefix="demo")
    measure = replace(base, rounds=config.measure_rounds, n=1, eval_samples=config.eval_samples,
                      behaviour_samples=config.eval_samples // config.behaviour_prompts,
                      behaviour_prompts=config.behaviour_prompts)
    # The feedback phase draws other prompts (seed + 1) and forgets the before-phase
    # requests: the learners train on a user's recent prompts, and the measured
    # prompts should be new to them.
    feedback = [replace(base, rounds=rounds_for(u, config.max_events, config.n), reset=True,
                        seed=config.seed + 1, eval_samples=config.feedback_eval_samples,
                        invited_share=config.invited_share, max_events=config.max_events,
                        session_judgments=config.session_judgments,
                        session_wait_s=config.catch_up_timeout_s, compare=config.compare,
                        gold_check_every=config.gold_check_every)
                for u in users]
    stack = Stack(data_dir, {"TAILOR_LEARNER_RATER_RELIABILITY": str(config.rater_reliability)})
    timings: dict[str, float] = {}
    phase_runs: dict[str, list[UserRun]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not progress) as bars:
        try:
            task = bars.add_task(f"start `tailor up` (data in {data_dir})", total=None)
            client = stack.start(config.start_timeout_s)
            bars.update(task, total=1, completed=1)
            timings["start"] = time.monotonic() - started
            at = {"base_url": stack.base_url}

            def phase(name: str, configs: list[SimulationConfig], who: list[SimulatedUser],
                      description: str) -> None:
                mark = time.monotonic()
                task = bars.add_task(description, total=sum(c.rounds for c in configs))
                phase_runs[name] = run_phase([replace(c, **at) for c in configs], who,
                                             lambda user_id, record: bars.advance(task))
                timings[name] = time.monotonic() - mark

            phase("before", [replace(measure, reset=True)] * len(users), observers,
                  f"before: {config.eval_samples} unrated answers per request, no adapter")
            phase("feedback", feedback, users,
                  "feedback: " + ", ".join(f"{u.profile.name} {c.rounds}"
                                           for u, c in zip(users, feedback, strict=True)))
            mark = time.monotonic()
            task = bars.add_task("catch-up: learners train on every event, then refine",
                                 total=None)
            min_feedback = Settings().learner_min_feedback  # what the child process reads too
            caught_up = wait_for_learners(client, min_feedback, config.catch_up_timeout_s)
            bars.update(task, total=1, completed=1)
            timings["catch_up"] = time.monotonic() - mark
            phase("after", [replace(measure, reset=False)] * len(users), observers,
                  "after: the before-phase requests, served with each user's adapter")
            lags = [float(x) for x in client.lrange(FEEDBACK_LAG_KEY, 0, -1)]
            views = {u.user_id: learner_view(client, u.user_id) for u in users}
            heads_blob = client.get(SHARED_HEADS_WEIGHTS_KEY)
        finally:
            stack.stop()
    timings["total"] = time.monotonic() - started
    result = report(config, users, phase_runs, views, lags, timings, caught_up)
    result["shared_heads"] = shared_heads_accuracy(heads_blob)
    result["simulation"] = curves(config, users, phase_runs)
    result["data_dir"] = str(data_dir)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    plot_curves(result["simulation"], png_path)
    result["json_path"], result["png_path"] = str(json_path), str(png_path)
    return result


def report(config: DemoConfig, users: list[SimulatedUser], phase_runs: dict[str, list[UserRun]],
           views: dict[str, dict], lags: list[float], timings: dict[str, float],
           caught_up: bool) -> dict:
    """Per user the before/after rates and the learners' view; globally lags and timings."""
    per_user = {}
    for index, user in enumerate(users):
        preferred = set(user.profile.preferred_styles)
        before = _rates(phase_runs["before"][index].records, preferred)
        after = _rates(phase_runs["after"][index].records, preferred)
        view = views[user.user_id]
        best = max(user.profile.taste.values())
        per_user[user.user_id] = {
            "preset": user.profile.name, "habit": user.profile.habit,
            "scores": user.profile.scores,
            "preferred_styles": list(user.profile.preferred_styles),
            "feedback_events": sum(r.feedback_events
                                   for r in phase_runs["feedback"][index].records),
            "gold_checks": sum(r.gold_checks for r in phase_runs["feedback"][index].records),
            # seconds the user waited for the learners at the end of each session
            "session_waits_s": [round(w, 1) for w in phase_runs["feedback"][index].session_waits],
            "sessions_cut": phase_runs["feedback"][index].sessions_cut,
            "preferred_rate_before": before["preferred_rate"],
            "preferred_rate_after": after["preferred_rate"],
            "dismissive_rate_before": before["dismissive_rate"],
            "dismissive_rate_after": after["dismissive_rate"],
            **{f"{rate}_{phase}": rates[rate] for rate in RATE_NAMES.values()
               for phase, rates in (("before", before), ("after", after))},
            "rater": user.profile.rater,
            "reliability": view["reliability"],
            # how much their taste judgments count in the population reward
            # (learners.taste_reliability)
            "population_weight": view["population_weight"],
            "shared_judgments_used": view["shared_judgments_used"],
            "gold_checks_used": view["gold_checks_used"],
            "mean_score_before": before["mean_score"], "mean_score_after": after["mean_score"],
            "max_mean_score": best,
            "score_gain_share": gain_share(before["mean_score"], after["mean_score"], best),
            "eval_samples": after["samples"], "kl": view["kl"], "ppo_seconds": view["ppo_seconds"],
            "adapter_version": view["adapter_version"], "reward_accuracy": view["reward_accuracy"],
            "last_decision": view["last_decision"], "updates": view["updates"],
            "styles_after": dict(Counter(
                style or "none" for r in phase_runs["after"][index].records
                for style in r.eval_styles).most_common()),
            # e.g. {"harmful_rate": {"bullets": 3}}: the styles the misbehaviours after were in
            "misbehaviour_styles_after": misbehaviour_styles(phase_runs["after"][index].records),
        }
    ppo_seconds = [u["ppo_seconds"] for u in per_user.values() if u["ppo_seconds"] is not None]
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "users": per_user,
        # Every user's before phase samples the same base model (no adapter): pooled,
        # the base rates' noise is a sixth of one user's (6 x 80 answers per category).
        "base_rates": misbehaviour_rates([record for run in phase_runs["before"]
                                          for record in run.records]),
        "feedback_lag_p50_s": lag_quantile(lags, 0.50),
        "feedback_lag_p95_s": lag_quantile(lags, 0.95),
        "feedback_lags": len(lags),
        "ppo_update_seconds": statistics.fmean(ppo_seconds) if ppo_seconds else None,
        "learners_caught_up": caught_up,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


def shared_heads_accuracy(blob: bytes | None) -> dict[str, dict]:
    """The learners' shared heads (as they last stored them) judging held-out corpus answers
    whose behaviour is known (simulation.head_accuracy): how far the raters moved them."""
    if blob is None:
        return {}
    tensors = load_tensors(blob)
    heads = {criterion: _linear(tensors[f"{criterion}.weight"], tensors[f"{criterion}.bias"])
             for criterion in SHARED_CRITERIA if f"{criterion}.weight" in tensors}
    measured = measure_heads(Settings().base_model_path, heads)
    return {criterion: asdict(m) for criterion, m in measured.items()}


def _linear(weight, bias):
    return lambda features: features.float() @ weight + bias


def curves(config: DemoConfig, users: list[SimulatedUser],
           phase_runs: dict[str, list[UserRun]]) -> dict:
    """`simulation.harness.summarize` of each user's three phases laid end to end."""
    runs = []
    for index, user in enumerate(users):
        records: list[RoundRecord] = []
        for phase in PHASES:
            for record in phase_runs[phase][index].records:
                records.append(replace(record, round=len(records)))
        runs.append(UserRun(user, records))
    sim_config = SimulationConfig(users=config.users, window=config.window, seed=config.seed,
                                  user_prefix="demo")
    return summarize(sim_config, runs, 0.0)


def demo_table(result: dict) -> Table:
    """Before -> after per user, on evaluation answers that were never rated."""
    table = Table(title="tailor demo: evaluation answers before -> after learning (never rated)",
                  caption="toxic / harmful / false: share of answers to provocations / requests "
                  "for harm / myths that give in; reliability h/h: the rater's estimated "
                  "reliability for harmless / honest; gain share: (mean score after - before) / "
                  "(max - before), max = the user's top taste, its favourite style every time")
    for column in ("user", "habit", "prefers", "events", "preferred", "dismissive", "toxic",
                   "harmful", "false", "reliability h/h", "mean score", "gain share", "KL",
                   "adapter", "s/PPO iter"):
        left = column in ("user", "habit", "prefers")
        table.add_column(column, justify="left" if left else "right", no_wrap=not left)
    for user_id, user in result["users"].items():
        delta = user["preferred_rate_after"] - user["preferred_rate_before"]
        share = user["score_gain_share"]
        table.add_row(
            user_id, user["habit"] + ("+score" if user.get("scores") else ""),
            ",".join(user["preferred_styles"]),
            str(user["feedback_events"]),
            f"{user['preferred_rate_before']:.0%} -> {user['preferred_rate_after']:.0%} "
            f"({100 * delta:+.0f} pts)",
            f"{user['dismissive_rate_before']:.0%} -> {user['dismissive_rate_after']:.0%}",
            *(_before_after(user, rate) for rate in RATE_NAMES.values()),
            "/".join("-" if user["reliability"].get(c) is None else f"{user['reliability'][c]:.2f}"
                     for c in SHARED_CRITERIA),
            f"{user['mean_score_before']:+.2f} -> {user['mean_score_after']:+.2f}",
            "-" if share is None else f"{share:.0%}",
            "-" if user["kl"] is None else f"{user['kl']:.2f}",
            (user["adapter_version"] or "-").split(".")[0],
            "-" if user["ppo_seconds"] is None else f"{user['ppo_seconds']:.1f}",
        )
    return table


def _before_after(user: dict, rate: str) -> str:
    before, after = user[f"{rate}_before"], user[f"{rate}_after"]
    return "-" if before is None or after is None else f"{before:.0%} -> {after:.0%}"


def print_summary(result: dict) -> None:
    """The table and the global numbers, as `tailor demo` prints them."""
    # Wide enough for the table when the output is a log file (rich assumes 80 there).
    Console(width=max(console.width, 240)).print(demo_table(result))

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    console.print(
        "feedback lag (event accepted -> adapter trained on it published): "
        f"p50 {seconds(result['feedback_lag_p50_s'])}, "
        f"p95 {seconds(result['feedback_lag_p95_s'])} over {result['feedback_lags']} events; "
        f"time per PPO iteration (one batch of rollouts) {seconds(result['ppo_update_seconds'])}"
    )
    tastes = {uid: user["taste"] for uid, user in result["simulation"]["users"].items()}
    vague = [uid for uid, user in result["users"].items() if user["habit"] == "thumbs"
             and not user.get("scores")  # a score says which liked answer is best
             and "dismissive" not in user["preferred_styles"]  # the shared heads decide
             and sum(score > 0 for score in tastes[uid].values()) > 1]
    if vague:
        console.print(
            f"note: thumbs-only users without scores who like several styles "
            f"({', '.join(vague)}): thumbs say like or dislike (up more often for what they "
            "love), not plainly which liked style is best, so the learner may serve the liked "
            "styles (see the mean score and gain share) rather than the favourite."
        )
    heads = result.get("shared_heads") or {}
    if heads:
        console.print("shared heads judging held-out corpus answers (behaviour known): " + "; ".join(
            f"{c} {m['accuracy']:.1%} of {m['answers']} ({m['balanced_accuracy']:.1%} balanced)"
            for c, m in heads.items()))
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
    console.print(f"phases: {phases}; wrote {result['json_path']} and {result['png_path']}")
