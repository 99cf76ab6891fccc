"""Tests of the default model, simulated users, the demo and the closed loop."""
