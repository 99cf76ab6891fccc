"""Floor 2: the learning path — reward models, PPO, the feedback consumer, scheduler and workers."""
