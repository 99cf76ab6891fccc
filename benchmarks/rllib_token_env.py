"""RLlib's PPO on a language model in the token-per-step formulation (a benchmark baseline).

DESIGN.md decision 7 says why the learners do not use RLlib: its PPO steps an
environment once per token, so every sampled token runs the model on the whole
context again (no KV cache), and it syncs the whole module state (the frozen
base too) from learner to env runners. This file builds exactly that, as a
baseline for `tailor bench learn` (benchmarks/learn.py), and nothing else
imports it:

- `TokenEnv`: a Gymnasium environment where an episode is one response. The
  observation is the token context (prompt + tokens so far) left-padded with −1
  to prompt + response length, the action is the next token (Discrete(vocab)),
  an episode is exactly ``response_tokens`` steps (EOS is an ordinary token, as on
  our side of the benchmark), and the reward comes at the last step.
- `TokenPolicyRLModule`: an RLlib RLModule (new API stack, torch) whose forward
  runs the same HF Llama + peft LoRA on the full context at every step, with a
  linear value head on the last hidden state (the same `ValueHead` our PPO uses).
- `BenchModelSpec` / `load_base_model`: the base model both sides of the
  benchmark load, rebuilt identically in every Ray process from a plain dict.

Left padding puts the newest token in the last column for every row, so the
next-token logits are always ``logits[:, -1]`` and the LM head runs on one column.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from peft import get_peft_model
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
)

from contracts.modeling import small_llama_config
from learners.ppo_config import PPOConfig
from learners.rollout import position_ids_from_mask
from learners.value_head import ValueHead

EMPTY_SLOT = -1  # observation entries before the context starts (left padding)


# --- the reward both sides optimise ---------------------------------------------------


def even_token_share(response_ids: list[int]) -> float:
    """Share of response tokens with an even id: a fixed, cheap stand-in for a user's reward
    model, so the benchmark times PPO itself. Identical on both sides of the benchmark."""
    if not response_ids:
        return 0.0
    return sum(1 for token in response_ids if token % 2 == 0) / len(response_ids)


# --- the base model ---------------------------------------------------------------------


@dataclass(frozen=True)
class BenchModelSpec:
    """The base model of the benchmark: an HF folder, or a random Llama of a given shape."""

    path: str | None = None  # HF model folder (config.json inside); None: a random Llama
    hidden_size: int = 160  # random Llama: width (the embedded default's shape)
    num_layers: int = 4  # random Llama: decoder layers
    vocab_size: int = 2048  # random Llama: vocabulary
    seed: int = 0  # random Llama: weight seed (both sides build the same weights)

    def describe(self) -> str:
        """One line for the benchmark's output."""
        if self.path is not None:
            return f"HF model at {self.path}"
        return (
            f"random Llama (hidden {self.hidden_size}, {self.num_layers} layers, "
            f"vocab {self.vocab_size}, seed {self.seed})"
        )

    def model_config(self) -> LlamaConfig | PretrainedConfig:
        """The model's HF config (read from config.json for a folder; no weights loaded)."""
        if self.path is None:
            return _random_llama_config(self)
        return AutoConfig.from_pretrained(self.path)

    def special_token_ids(self) -> set[int]:
        """Pad, EOS and BOS ids of the model: benchmark prompts leave them out."""
        config = self.model_config()
        special: set[int] = set()
        for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
            value = getattr(config, name, None)
            special.update(value if isinstance(value, list) else [] if value is None else [value])
        return special

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for RLlib's ``model_config`` (rebuilt with ``BenchModelSpec(**d)``)."""
        return asdict(self)


def load_base_model(spec: BenchModelSpec) -> PreTrainedModel:
    """The base model of ``spec`` in float32, eval mode; a random one is the same in every
    process because its weights come from ``spec.seed`` alone."""
    if spec.path is not None:
        if not (Path(spec.path) / "config.json").is_file():
            raise ValueError(
                f"BenchModelSpec.path={spec.path!r}: no config.json there; give an HF model "
                "folder or path=None for a random Llama."
            )
        model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=torch.float32)
        return model.eval()
    config = _random_llama_config(spec)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(generator_state)  # leave the caller's randomness alone
    return model.eval()


def _random_llama_config(spec: BenchModelSpec) -> LlamaConfig:
    return small_llama_config(spec.vocab_size, spec.hidden_size, spec.num_layers,
                              intermediate_ratio=2.8, num_kv_heads=4)


# --- the environment --------------------------------------------------------------------


class TokenEnv(gym.Env):
    """One response as an episode: observation = context, action = next token.

    ``config``: ``prompts`` (list of token-id lists, all of one length P; each episode
    draws one), ``response_tokens`` (R, the episode length), ``vocab_size``. The
    observation is (P + R,) int64: the context right-aligned, −1 before it.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        prompts = config.get("prompts")
        if not prompts or len({len(prompt) for prompt in prompts}) != 1 or not prompts[0]:
            raise ValueError(
                f"TokenEnv config prompts={prompts!r}: give a non-empty list of token-id "
                "lists, all of the same non-zero length."
            )
        self.response_tokens = int(config.get("response_tokens", 0))
        if self.response_tokens < 1:
            raise ValueError(
                f"TokenEnv config response_tokens={config.get('response_tokens')!r}: "
                "give the episode length, an integer >= 1."
            )
        self.vocab_size = int(config.get("vocab_size", 0))
        if self.vocab_size < 2:
            raise ValueError(
                f"TokenEnv config vocab_size={config.get('vocab_size')!r}: give the model's "
                "vocabulary size (>= 2)."
            )
        self.prompts = np.asarray(prompts, dtype=np.int64)  # (N, P)
        self.context_tokens = self.prompts.shape[1] + self.response_tokens
        self.observation_space = gym.spaces.Box(
            low=EMPTY_SLOT, high=self.vocab_size - 1, shape=(self.context_tokens,), dtype=np.int64
        )
        self.action_space = gym.spaces.Discrete(self.vocab_size)
        self._prompt = self.prompts[0]
        self._response: list[int] = []

    def _observation(self) -> np.ndarray:
        context = np.concatenate([self._prompt, np.asarray(self._response, dtype=np.int64)])
        observation = np.full(self.context_tokens, EMPTY_SLOT, dtype=np.int64)
        observation[self.context_tokens - len(context) :] = context
        return observation

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._prompt = self.prompts[self.np_random.integers(len(self.prompts))]
        self._response = []
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if len(self._response) >= self.response_tokens:
            raise RuntimeError("TokenEnv.step after the episode ended; call reset() first.")
        self._response.append(int(action))
        done = len(self._response) == self.response_tokens
        # The user's score arrives once, for the whole response (as in our PPO).
        reward = even_token_share(self._response) if done else 0.0
        return self._observation(), reward, done, False, {}


# --- the RLModule -------------------------------------------------------------------------


class TokenPolicyRLModule(TorchRLModule, ValueFunctionAPI):
    """HF Llama + LoRA as an RLlib policy: full-context forward per step, no KV cache.

    ``model_config``: ``model`` (a `BenchModelSpec.as_dict()`), ``lora_rank``,
    ``lora_alpha``, ``lora_target_modules`` (as in `learners.ppo_config.PPOConfig`),
    ``threads`` (torch threads in this process).
    """

    def setup(self) -> None:
        torch.set_num_threads(int(self.model_config.get("threads", 1)))
        ppo_config = PPOConfig(
            lora_rank=int(self.model_config["lora_rank"]),
            lora_alpha=float(self.model_config["lora_alpha"]),
            lora_target_modules=tuple(self.model_config["lora_target_modules"]),
        )
        base = load_base_model(BenchModelSpec(**self.model_config["model"]))
        self.policy = get_peft_model(base, ppo_config.lora_config())
        self.value_head = ValueHead(base.config.hidden_size)

    def _next_token_logits_and_hidden(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        observation = batch[Columns.OBS].long()  # (B, C), −1 before the context
        attention_mask = (observation != EMPTY_SLOT).long()  # (B, C)
        output = self.policy(
            input_ids=observation.clamp(min=0),
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            output_hidden_states=True,
            use_cache=False,  # the formulation under test: the whole context every step
            logits_to_keep=1,
        )
        logits = output.logits[:, -1].float()  # (B, V): predicts the next token
        hidden = output.hidden_states[-1][:, -1]  # (B, H): the value head's input
        return logits, hidden

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits, _ = self._next_token_logits_and_hidden(batch)
        return {Columns.ACTION_DIST_INPUTS: logits}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        logits, hidden = self._next_token_logits_and_hidden(batch)
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: hidden}

    def compute_values(
        self, batch: dict[str, Any], embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """V(context) (B,): reuses the train forward's hidden states when given."""
        if embeddings is None:
            _, embeddings = self._next_token_logits_and_hidden(batch)
        return self.value_head(embeddings)  # (B,)
