"""Prometheus metrics for one worker, on its own CollectorRegistry (no process-global state)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric the worker exports; `serve(port)` exposes them over HTTP."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("vrae_events_total", "Valid events by window-store outcome "
                              "(accepted, gap, duplicate, late, replayed)", ["outcome"], registry=r)
        self.invalid = Counter("vrae_invalid_events_total", "Events sent to the dead-letter topic, by reason",
                               ["reason"], registry=r)
        self.windows_scored = Counter("vrae_windows_scored_total", "Due windows scored by the model", registry=r)
        self.alerts = Counter("vrae_alerts_total", "Alerts produced (replays included)", registry=r)
        self.incidents = Counter("vrae_incidents_total", "Incident records produced (replays included), by phase",
                                 ["phase"], registry=r)
        self.model_reloads = Counter("vrae_model_reloads_total",
                                     "Changed model files handled, by outcome (swapped, rejected)", ["outcome"],
                                     registry=r)
        self.series_created = Counter("vrae_series_created_total",
                                      "Series whose window state was created (new or expired by TTL)", registry=r)
        self.series_tracked = Gauge("vrae_series_tracked", "Series the state store tracks, of at most "
                                    "VRAE_WINDOW__MAX_SERIES (set when a batch brings new series)", registry=r)
        self.detector_states = Counter("vrae_detector_states_total", "Detector states a batch judged from, by "
                                       "source: the worker's own copy, or read back from redis (another worker "
                                       "changed it, or none was kept)", ["source"], registry=r)
        self.batches = Counter("vrae_batches_total", "Batches processed and committed", registry=r)
        self.batch_failures = Counter("vrae_batch_failures_total",
                                      "Batches abandoned for a retry (Redis or broker unavailable)", ["cause"],
                                      registry=r)
        self.commit_failures = Counter("vrae_commit_failures_total",
                                       "Offset commits that failed (the batch will be replayed)", registry=r)
        self.batch_seconds = Histogram("vrae_batch_seconds", "Wall time of one batch, parse to delivery confirmed",
                                       buckets=LATENCY_BUCKETS_S, registry=r)
        self.inference_seconds = Histogram("vrae_inference_seconds", "Model forward time per batch",
                                           buckets=LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram("vrae_batch_records", "Records per batch",
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=r)
        self.consumer_lag = Gauge("vrae_consumer_lag", "Records behind the partition's high watermark",
                                  ["topic", "partition"], registry=r)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Start the /metrics endpoint on a daemon thread (port 0: disabled)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
