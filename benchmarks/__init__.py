"""Floor 3: benchmarks that print ratios measured side by side (`tailor bench ...`).

Installed with the `bench` extra (RLlib for the PPO baseline); production code
never imports them.
"""
