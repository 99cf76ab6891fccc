"""Tests of the Kubernetes manifests, validated offline."""
