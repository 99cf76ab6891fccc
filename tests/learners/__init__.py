"""Tests of the learning path: feedback intake, reward models, PPO, scheduling."""
