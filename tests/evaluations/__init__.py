"""Tests of the reward evaluations on Polis data."""
