"""Tests of the online path: engine, batching, API, Ray Serve app."""
