"""Settings of the per-user reward model (`learners.reward_model`).

All checks run when the config is built, so a bad value fails at start-up with a
message that names the field and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RewardConfig:
    rank: int = 3  # user factors per user on the user tower (0: none)
    crowd_factor: bool = True  # one more factor per user: their weight on the population reward
    # Linear towers by default: they generalise from a few hundred events to texts
    # never judged (what a learner faces); an MLP tower (e.g. 128) pays off only
    # with many judgments per text, as in the seen-texts protocol of reward_eval.
    population_hidden: int = 0  # hidden units of the population tower (0: linear head)
    user_hidden: int = 0  # hidden units of the user tower g (0: linear projection)
    population_weight_decay: float = 1e-3  # L2 on population tower weights (on the mean loss)
    user_tower_weight_decay: float = 1e-3  # L2 on user tower weights (on the mean loss)
    user_l2: float = 1.0  # shrinkage of each user's factors z_u toward 0 (on their summed loss)
    bias_l2: float = 1.0  # shrinkage of each user's bias b_u toward 0 (on their summed loss)
    steps: int = 300  # full-batch Adam steps per stage (population, then user part)
    learning_rate: float = 0.03  # Adam step size
    newton_steps: int = 15  # Newton iterations when (re)fitting user heads with towers frozen
    seed: int = 0  # initialisation of the towers

    def __post_init__(self) -> None:
        for name in ("rank", "population_hidden", "user_hidden", "steps", "newton_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name}={getattr(self, name)} must be ≥ 0")
        for name in ("population_weight_decay", "user_tower_weight_decay", "user_l2", "bias_l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name}={getattr(self, name)} must be ≥ 0; "
                                 "use 0 for no penalty")
        if self.learning_rate <= 0:
            raise ValueError(f"RewardConfig.learning_rate={self.learning_rate} must be > 0; "
                             "use e.g. 0.03")
