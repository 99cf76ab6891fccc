"""Prometheus metrics of the online path. Each process has its own registry;
the Ingress's ``/metrics`` serves its own plus the Generator's (see api.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class IngressMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tailor_requests", "HTTP requests by route and status", ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tailor_request_latency_seconds", "End-to-end latency of chat completions",
            ["stream"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.ttft = Histogram(
            "tailor_time_to_first_token_seconds", "Request arrival to first token",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.tokens = Counter(
            "tailor_generated_tokens", "Completion tokens generated", registry=self.registry
        )
        self.comparisons = Counter(
            "tailor_comparisons", "Requests with compare: true, by how their choices were "
            "chosen (thompson, or sampled: no reward of the user yet, streamed, n=1)",
            ["chosen_by"], registry=self.registry,
        )
        self.feedback = Counter(
            "tailor_feedback_events", "Feedback events by type and outcome", ["type", "outcome"],
            registry=self.registry,
        )


class GeneratorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batch_rows = Histogram(
            "tailor_batch_rows", "Rows (choices) per generation batch",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry,
        )
        self.batch_adapters = Histogram(
            "tailor_batch_distinct_adapters", "Distinct adapters per generation batch",
            buckets=(0, 1, 2, 4, 8, 16, 32), registry=self.registry,
        )
        self.adapter_cache = Counter(
            "tailor_adapter_cache", "Adapter cache events", ["event"], registry=self.registry
        )
        self.adapters_cached = Gauge(
            "tailor_adapters_cached", "Adapters held in this replica's slots", registry=self.registry
        )
        self.adapter_host_cache = Counter(
            "tailor_adapter_host_cache", "Host-memory adapter tier events (a slot miss asks it)",
            ["event"], registry=self.registry,
        )
        self.adapters_host_cached = Gauge(
            "tailor_adapters_host_cached", "Adapters held in this replica's host-memory tier",
            registry=self.registry,
        )
        self.adapter_host_bytes = Gauge(
            "tailor_adapter_host_cache_bytes", "Bytes of the adapters in the host-memory tier",
            registry=self.registry,
        )
        self.queue_full = Counter(
            "tailor_requests_refused_queue_full",
            "Requests refused with 429 because too many rows waited (TAILOR_MAX_QUEUED_ROWS)",
            registry=self.registry,
        )
