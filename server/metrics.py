"""Prometheus metrics of one receiver (a registry per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0)


class ReceiverMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions = Gauge("ndpca_sessions", "sessions by state", ["state"], registry=r)
        self.connections = Gauge("ndpca_edge_connections", "open edge websockets", registry=r)
        self.chunks = Counter("ndpca_chunks_total", "chunks received", ["session", "outcome"], registry=r)
        self.missing = Counter("ndpca_missing_chunks_total", "active sources missing at a step's decode",
                               ["session"], registry=r)
        self.payload_bits = Counter("ndpca_payload_bits_total", "payload bits received", ["session"],
                                    registry=r)
        self.steps = Counter("ndpca_steps_total", "steps decoded", ["session"], registry=r)
        self.errors = Counter("ndpca_protocol_errors_total", "protocol errors sent", ["code"], registry=r)
        self.capacity = Gauge("ndpca_capacity_bps", "capacity of the last opened step", ["session"],
                              registry=r)
        self.budget = Gauge("ndpca_budget_coefficients", "budget L_t of the last opened step",
                            ["session"], registry=r)
        self.decode_seconds = Histogram("ndpca_decode_seconds", "step close to decoded audio",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.e2e_seconds = Histogram("ndpca_e2e_latency_seconds", "capture start to decoded audio",
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("ndpca_decode_batch_size", "steps decoded in one batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.gc_pauses = Histogram("ndpca_gc_pause_seconds", "garbage-collection pauses of the receiver",
                                   ["generation"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5),
                                   registry=r)

    def gc_pause(self, seconds: float, generation: int) -> None:
        self.gc_pauses.labels(str(generation)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
