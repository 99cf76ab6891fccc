"""Floor 3: benchmarks that print ratios measured side by side (`tailor bench ...`).

Their own dependency (RLlib, the PPO baseline) comes with the `bench` extra; production code
never imports them.
"""
