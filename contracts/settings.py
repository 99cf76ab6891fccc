"""Tailor's settings: one class, read from environment variables (prefix ``TAILOR_``).

Every part of Tailor (the Serve app, the learners, the CLI) reads its
configuration from here, so a local run and a Kubernetes deployment share one
source of truth. ``REDIS_URL`` is also accepted without the prefix, as most
platforms inject it that way.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.records import BUILTIN_CRITERIA

# A rate limit as the `limits` library reads it, restricted to one window
RATE = re.compile(r"[1-9][0-9]*\s*/\s*(second|minute|hour|day)")

# The default base model ships with the package (built by `tailor model build`).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TAILOR_", env_file=None, extra="ignore", populate_by_name=True
    )

    # --- storage -------------------------------------------------------------
    data_dir: Path = Field(
        Path(".tailor"), description="Local folder for the embedded Redis, adapters and Ray."
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("TAILOR_REDIS_URL", "REDIS_URL"),
        description="Redis for completions and feedback. Unset: the CLI starts its own "
        "redis-server on `redis_port` with data under `data_dir/redis`.",
    )
    redis_port: int = Field(6390, ge=1, le=65535, description="Port of the embedded redis-server.")
    redis_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait for Redis to connect or answer a command; "
        "past it the request gets 503 with Retry-After.")
    redis_fsync: Literal["always", "everysec"] = Field(
        "everysec",
        description="AOF fsync policy of the embedded redis-server: `always` loses no "
        "acknowledged event on power loss; `everysec` may lose up to ~1 s of them.",
    )
    adapter_store: str = Field(
        "",
        description="fsspec URI of the adapter store (a folder, s3://..., gs://...). "
        "Empty: `data_dir/adapters`.",
    )
    completion_ttl_s: int = Field(
        7 * 24 * 3600, ge=60, description="How long a completion can still be rated (seconds)."
    )

    # --- model -----------------------------------------------------------------
    base_model: str = Field(
        "",
        description="Local folder of a Hugging Face causal LM. Empty: the built-in tiny model.",
    )
    served_model_name: str = Field("tailor-base", description="Model id in the OpenAI API.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto` uses CUDA (bf16) when a GPU is visible, else CPU (fp32)."
    )
    max_lora_rank: int = Field(16, ge=1, le=256, description="Largest LoRA rank served.")
    lora_rank: int = Field(8, ge=1, le=256, description="Rank of the adapters the learners train.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha of the adapters the learners train.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Linear layers that carry LoRA (JSON list). Served adapters must target "
        "a subset; fewer targets make mixed-adapter batches cheaper.",
    )
    adapter_cache_size: int = Field(
        32, ge=1, description="Adapters in the serving model's slots per replica (on its "
        "device; LRU, in-use ones pinned)."
    )
    # Host memory per adapter: r·(in+out) values per target layer. The default model's
    # rank-8 q/v adapters take 80 KB (256 of them 20 MB); a 7B Llama's rank-16 q/v
    # adapters in bf16 ~17 MB each (256: 4.3 GB): size it to the replica's host memory.
    adapter_host_cache_size: int = Field(
        256, ge=0, description="Adapters kept in host memory per replica behind the slots "
        "(LRU; a slot miss that hits here is a memory copy, not a store read; 0: none)."
    )

    # --- serving ---------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP server.")
    num_replicas: int = Field(1, ge=1, description="Generation replicas.")
    replica_num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per replica.")
    replica_num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per replica.")
    torch_threads: int = Field(
        1, ge=1, description="torch threads per replica and learner (keep within their CPUs)."
    )
    max_batch_size: int = Field(16, ge=1, le=256, description="Rows (choices) decoding at once.")
    rate_limit_chat: str | None = Field(
        None, description='Chat requests allowed per user, e.g. "60/minute" (the `limits` '
        "library's notation); unset: no limit.")
    rate_limit_feedback: str | None = Field(
        None, description='Judgments allowed per user, e.g. "120/minute"; unset: no limit.')
    max_queued_rows: int = Field(
        256, ge=1, description="Rows (choices) a replica lets wait for the batch; a request "
        "beyond it gets 429 with Retry-After at once instead of waiting without bound.")
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGINT/SIGTERM, how long requests in flight may take to "
        "finish (new ones get 503) and a learner its current update, before Tailor stops anyway.")
    batch_wait_ms: float = Field(
        5.0, ge=0, description="How long an idle engine waits for more requests before it starts."
    )
    continuous_batching: bool = Field(
        True,
        description="Requests join the running batch between decode steps; false: each batch "
        "runs to its end before the next starts.",
    )
    chunked_prefill: bool = Field(
        True, description="A joining request's prompt runs in the running rows' decode step, "
        "in chunks (false: in a forward of its own between two decode steps).")
    prefill_chunk_tokens: int = Field(
        512, ge=16, description="Prompt tokens run per engine step beside the decode of the "
        "running rows; a longer prompt runs over several steps.")
    metrics_max_users: int = Field(
        50, ge=0, description="Users with their own learner series in /metrics (most recently "
        "updated first); every user's numbers are in GET /v1/users/{id}.",
    )
    max_tokens_limit: int = Field(512, ge=1, description="Upper bound on `max_tokens`.")
    default_max_tokens: int = Field(64, ge=1, description="`max_tokens` when a request omits it.")
    max_n: int = Field(8, ge=1, le=16, description="Upper bound on `n` (choices per request).")
    comparison_candidates: int = Field(
        2, ge=1, le=8, description="A request with `compare: true` samples this many "
        "candidates per choice and shows the ones Thompson sampling of the user's reward "
        "picks (service.comparison; capped by max_batch_size); 1: plain samples.")
    max_prompt_tokens: int = Field(1024, ge=16, description="Longest accepted prompt.")
    max_comment_chars: int = Field(2000, ge=0, description="Longest feedback comment.")
    max_correction_chars: int = Field(
        8000, ge=1, description="Longest correction (the answer a user wanted instead).")
    extra_feedback_criteria: list[str] = Field(
        default_factory=list,
        description='Criteria a judgment may name besides helpful, honest and harmless, as JSON '
        '(`["concise"]`): lower-case letters, digits and _.',
    )

    # --- identity ----------------------------------------------------------------
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description='API key -> user id, as JSON (`{"sk-alice": "alice"}`). When set, '
        "every request needs a key and the key decides the user.",
    )
    gateway_keys: list[str] = Field(
        default_factory=list,
        description='API keys of trusted gateways such as Open WebUI, as JSON (`["sk-gw"]`). '
        "Their holder names the user with X-User-Id / X-OpenWebUI-User-Id (or the body's "
        "user): one key for all of a gateway's users. Setting any key makes keys required.",
    )
    trust_user_headers: bool = Field(
        True,
        description="Without keys: accept X-User-Id / X-OpenWebUI-User-Id from a trusted "
        "gateway. Turn off when clients reach the server directly.",
    )
    openwebui_secret: str = Field(
        "",
        description="Shared secret of Open WebUI's Tailor function: it sends Open WebUI's "
        "rating events to POST /v1/integrations/openwebui/events with `Authorization: Bearer "
        "<secret>` (a gateway key is accepted there too). Empty: only gateway keys; no keys "
        "at all: the route refuses every event.",
    )

    # --- learners ----------------------------------------------------------------
    # Two half-CPU learners by default: between requests the Generator idles, and on
    # 2 cores two workers training two users at once caught up with 4 simulated users
    # in 135 s instead of 294 s (tailor demo). Each uses one torch thread (torch_threads).
    learner_workers: int = Field(2, ge=0, description="Learner actors (0: serve only).")
    learner_num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per learner actor.")
    learner_num_gpus: float = Field(0.0, ge=0, description="GPUs per learner actor.")
    # 8, not 4: an update on 4 judgments fits a reward model that often ranks the wrong
    # style first, and PPO's early moves then have to be undone (KL spent for nothing);
    # fewer early updates leave time for the refines on the final reward model. With 8
    # (and 6-iteration refines) four simulated users' preferred-style rates rose +56..+78
    # points; with 4 (and 4-iteration refines) +30..+60 (tailor demo, 60 judgments each).
    learner_min_feedback: int = Field(
        8, ge=1, description="New feedback events a user needs before the next update."
    )
    learner_user_cache_size: int = Field(
        64, ge=0, description="Recently trained users whose published adapter and value head "
        "a learner worker keeps in host memory, so their next update reads neither the "
        "adapter store nor Redis for them (LRU; 0: none).")
    learner_lease_s: int = Field(
        300, ge=1, description="A user's training lease; expires if its worker dies."
    )
    learner_reclaim_idle_s: float = Field(
        30.0, gt=0, description="Feedback a silent worker read but did not apply is taken over after this."
    )
    learner_ppo_iterations: int = Field(
        3, ge=1, description="PPO iterations per feedback-driven user update; an update on a "
        "burst runs this many per learner_min_feedback new judgments, up to 4 times as many.")
    # learners.gate.GateConfig says where 12 comes from; an update stops its iterations
    # before one would carry it over (learners.gate.next_step_crosses_kl_bound).
    learner_kl_bound: float = Field(
        12.0, gt=0, description="Largest mean KL per held-out answer, in nats, between a "
        "user's adapter and its reference (the base model, or the safety start) that the "
        "publish gate lets through: how far any user's votes may move their assistant.")
    learner_target_kl: float | None = Field(
        None, gt=0, description="A PPO iteration's optimiser steps stop once the policy is "
        "this far (approx KL per token, nats) from the one that sampled its rollouts; "
        "unset: every step.")
    # 0.1: the closed loop's tastes rose as far at under half the KL (README, "Learning
    # from feedback"); the reward's KL charges only the tokens the rollouts drew
    learner_kl_loss_coef: float = Field(
        0.1, ge=0, description="Weight of the exact KL to the reference (over the whole "
        "vocabulary, at every position of the rollouts) as a term of the PPO loss; 0: off, "
        "the KL is charged in the reward only.")
    # 1 here: on this 2-core CPU the tiny model's PPO is compute-bound, so 8 users in one
    # batch took as long as 8 in turn (README "Several users per PPO batch"); on a GPU,
    # where one user's 64 rows leave it mostly idle, batch users (8 in k8s/).
    learner_users_per_batch: int = Field(
        1, ge=1, le=64, description="Users a learner worker trains together in one PPO batch "
        "(K): their rollouts share every forward pass, each row through its user's LoRA.")
    # 2 on the v2 model's closed loop (learners.worker.LearnerOptions says why refines
    # exist); the v3 runs of README "Honest and harmless for everyone" used 3.
    learner_refine_updates: int = Field(
        2, ge=0, description="Idle-time refine updates (PPO on the final reward model) a user "
        "gets after their feedback stops.")
    # 64, not 16: a style the user prefers may start at ~10% of answers; 64 rollouts see
    # it ~6 times per iteration. Measured on the default model, per second of compute
    # 64 rollouts (8 minibatches) moved the style fastest: ~15% -> ~55% in 8 iterations.
    learner_rollout_batch: int = Field(64, ge=2, description="Prompts (rollouts) per PPO update.")
    learner_max_new_tokens: int = Field(
        64, ge=4, description="Longest rollout response; one cut here is penalised as unfinished."
    )
    # --- honest and harmless for everyone (README, "Honest and harmless") ----------
    principles_file: Path | None = Field(
        None, description="Written principles, the shared heads' prior (default: the base "
        "model folder's principles.yaml, if any).")
    # Fixed, not per-user multipliers: no user's data may change how much harm costs.
    # In user-standard units (the user's reward: 1 = one standard deviation of their
    # taste, clipped to ±3). 2, the old guard's strength, holds the adversarial user's
    # votes for the dismissive style on the shipped v2 model (11% -> 1% in a demo run
    # with 8) where the heads' judgments of ordinary answers are noisy; with 8 (more than
    # the whole clipped taste range) the same run gave the formal ranker +10 points, far
    # below the closed loop's 30 (with the old 2-unit guard it passed in most runs). The
    # v3 model, whose harms are real, will want more: tuned with issue 12's closed loop.
    learner_shared_head_strength: float = Field(
        2.0, ge=0, description="Reward taken off an answer the shared heads surely judge "
        "harmful or false (0: the heads only gate).")
    # Below it an answer costs nothing: the heads' small probabilities for everyday
    # answers differ by style (v3: ~0.05 concise, ~0.01 formal), which times the strength
    # was a taste of its own (learners.shared_judge).
    learner_shared_head_threshold: float = Field(
        0.0, ge=0, lt=1, description="Probability of breaking a shared criterion below which "
        "an answer pays no penalty; above it the penalty rises linearly to the full strength.")
    learner_red_team_threshold: float = Field(
        0.0, ge=0, lt=1, description="The same threshold on red-team prompts (requests for harm, "
        "provocations, myths): there a probability of breaking a criterion is what the prompt "
        "asks about, not a style's leaning, so by default every bit of it pays.")
    # Off until the v3 closed loop is tuned (issue 12): a quarter to a half of every batch
    # held the misbehaviours near their base rates but cost the ordinary users most of
    # their taste (+5..+15 points instead of +28..+67 in tailor demo runs).
    learner_red_team_share: float = Field(
        0.0, ge=0, lt=1, description="Share of each PPO batch drawn from the principles' "
        "red-team prompts (requests for harm, provocations, myths), whitened apart from the "
        "user's own prompts.")
    # 1 until the v3 closed loop shows a better value (issue 12; README, "Honest and
    # harmless for everyone"): KL 7-11 nats per answer on red-team prompts was where the
    # policy drifted into blends the heads miss, at β = 0.1 under 1 reward unit.
    learner_red_team_kl_weight: float = Field(
        1.0, ge=0, description="Factor on the KL penalty (β) for the red-team rows of a PPO "
        "batch: above 1 holds the answers to requests for harm, provocations and myths nearer "
        "the safety start than the user's taste holds their own prompts.")
    # true: a six-user v3 run with false (CC) lost two tastes (README, runs CA-CC)
    learner_red_team_kl_loss: bool = Field(
        True, description="Whether the exact-KL loss term (learner_kl_loss_coef) holds the "
        "red-team rows of a PPO batch too; false: only the user's own prompts, and on requests "
        "for harm, provocations and myths the shared heads' penalty alone moves the answers.")
    # True (today's): the user's taste rewarded joke step-by-step lists on requests for
    # harm (bullet and detailed tastes), yet one v3 run with false ended no lower in
    # harmful compliance and two tastes short of the bar (README, run M).
    learner_red_team_taste: bool = Field(
        True, description="Whether the user's taste counts on red-team prompts (the "
        "principles' and everyone's reported ones) in their PPO batch; false: only the shared "
        "heads score answers there, so no user's votes push their answers to requests for "
        "harm, provocations and myths.")
    # True: run AJ (false) left the adversarial rater's toxic rate at 12 of 240 where every
    # other user's fell to 3-6 (README, "No user's taste favours a breach"); run AN (false)
    # lost formal_scholar's taste as runs with it on did, so the rule did not cost it.
    learner_breach_taste: bool = Field(
        True, description="Whether an answer the shared heads judge breaking a criterion "
        "loses the user's taste for it, down to their worst as surely as it breaks one "
        "(false: their taste counts as is, and the heads' penalty alone stands against it).")
    learner_safety_start_iterations: int = Field(
        0, ge=0, description="PPO iterations on the shared heads alone, over the red-team "
        "prompts, of the adapter every new user starts from (0: users start from the base "
        "model).")
    learner_safety_start_everyday_steps: int = Field(
        0, ge=0, description="Optimiser steps per safety-start iteration imitating the base "
        "model's fine answers to the principles' everyday prompts (`everyday`), beside its "
        "PPO on the red-team prompts (32 steps an iteration): it keeps the base model's "
        "everyday styles (0: off).")
    learner_rater_reliability: bool = Field(
        True, description="Weight judgments of harmless/honest by each rater's estimated "
        "reliability, and each user's judgments in the population reward by their agreement "
        "with everyone else's (false: everyone at their word, the ablation).")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"REDIS_URL={value!r} is not a Redis URL; use redis://host:port/db"
            )
        return value or None

    @field_validator("rate_limit_chat", "rate_limit_feedback")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value and not RATE.fullmatch(value.strip()):
            raise ValueError(
                f"{value[:40]!r} is not a rate: use N/second, N/minute, N/hour or N/day "
                '(e.g. "60/minute")'
            )
        return value.strip() if value else None

    @field_validator("principles_file")
    @classmethod
    def _principles_exist(cls, value: Path | None) -> Path | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(
                f"TAILOR_PRINCIPLES_FILE={str(value)!r} is not a file; point it at a "
                "principles.yaml (the default model's is contracts/default_model/principles.yaml)"
            )
        return value

    @field_validator("extra_feedback_criteria")
    @classmethod
    def _criterion_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
                raise ValueError(
                    f"criterion {name[:40]!r}: use 1-32 lower-case letters, digits and _, "
                    "starting with a letter"
                )
        return names

    @property
    def feedback_criteria(self) -> tuple[str, ...]:
        return (*BUILTIN_CRITERIA, *self.extra_feedback_criteria)

    @model_validator(mode="after")
    def _limits_consistent(self) -> Settings:
        if self.lora_rank > self.max_lora_rank:
            raise ValueError(
                f"TAILOR_LORA_RANK={self.lora_rank} exceeds TAILOR_MAX_LORA_RANK="
                f"{self.max_lora_rank}; serving could not load the learners' adapters"
            )
        if shared := sorted(set(self.api_keys) & set(self.gateway_keys)):
            raise ValueError(
                f"{len(shared)} key(s) are in both TAILOR_API_KEYS and TAILOR_GATEWAY_KEYS; a "
                "key is either one user's or a gateway's: remove it from one of them"
            )
        if self.openwebui_secret and len(self.openwebui_secret) < 16:
            raise ValueError(
                "TAILOR_OPENWEBUI_SECRET is shorter than 16 characters; use a long random one "
                "(python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        if self.openwebui_secret and self.openwebui_secret in self.api_keys:
            raise ValueError(
                "TAILOR_OPENWEBUI_SECRET is also a user's key in TAILOR_API_KEYS: that user "
                "could send ratings for everyone; give the Open WebUI function a secret of its own"
            )
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"TAILOR_DEFAULT_MAX_TOKENS={self.default_max_tokens} exceeds "
                f"TAILOR_MAX_TOKENS_LIMIT={self.max_tokens_limit}; lower it or raise the limit"
            )
        return self

    @cached_property
    def base_model_path(self) -> Path:
        return Path(self.base_model) if self.base_model else DEFAULT_MODEL_DIR

    @property
    def principles_path(self) -> Path | None:
        """The principles the shared heads start from, or None (no prior)."""
        if self.principles_file is not None:
            return self.principles_file
        beside = self.base_model_path / "principles.yaml"
        return beside if beside.is_file() else None

    @cached_property
    def adapter_store_uri(self) -> str:
        return self.adapter_store or str((self.data_dir / "adapters").resolve())

    @cached_property
    def embedded_redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or self.embedded_redis_url


def settings_problems(error: ValidationError) -> list[str]:
    """One line per invalid setting in ``error`` (from building `Settings`), named as an
    operator sets it (its TAILOR_ variable), with what was given and the fix."""
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        variable = field if field.isupper() else f"TAILOR_{field.upper()}"
        known = Settings.model_fields.get(field.lower().removeprefix("tailor_"))
        default = f" ({known.default})" if known is not None else ""
        given = f"={problem['input']}" if isinstance(problem.get("input"), str | int | float) else ""
        lines.append(f"{variable}{given}: {problem['msg']}. Set a valid value, or unset it "
                     f"for the default{default}.")
    return lines
