"""Floor 3: offline evaluations of the reward models on real people's votes (Polis)."""
