"""Tests of the contracts: settings, adapter store and configs, feedback lag."""
