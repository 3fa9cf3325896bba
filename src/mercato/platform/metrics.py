"""Prometheus metrics, one registry per application instance (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """The application's collectors.

    ``requests`` counts responses by method, route template and status; ``latency`` is seconds per request by
    method and route template; ``in_flight`` is requests being served now; ``cache_hits``/``cache_misses`` count
    session-state cache lookups; ``jobs_pending`` is the job queue depth, set by the job runner.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mercato_http_requests_total",
            "HTTP responses by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mercato_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = Gauge("mercato_http_requests_in_flight", "Requests being served", registry=self.registry)
        self.cache_hits = Counter("mercato_cache_hits_total", "Cache hits", ["cache"], registry=self.registry)
        self.cache_misses = Counter("mercato_cache_misses_total", "Cache misses", ["cache"], registry=self.registry)
        self.jobs_pending = Gauge("mercato_jobs_pending", "Jobs waiting to run", registry=self.registry)
        self.jobs_dead = Gauge("mercato_jobs_dead", "Jobs that exhausted their attempts", registry=self.registry)
        self.db_pool_checked_out = Gauge(
            "mercato_db_pool_checked_out", "Database connections in use", registry=self.registry
        )
