"""Prometheus metrics (text format on an HTTP port): requests and latency per RPC, batch sizes,
queue depth, tokens, store size."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "zembed_requests", "RPCs by method and status code", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "zembed_request_seconds",
            "RPC latency",
            ["method"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "zembed_batch_size",
            "inputs per inference batch",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.batch_seconds = Histogram("zembed_batch_seconds", "inference time per batch", registry=r)
        self.tokens = Counter("zembed_tokens", "tokens embedded", registry=r)
        self.store_seconds = Histogram(
            "zembed_store_search_seconds",
            "store search time (scan + rescoring) per call; a batch of queued queries counts once",
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256),
        )
        self.queue_depth = Gauge("zembed_queue_depth", "inputs waiting for inference", registry=r)

    def on_batch(self, size: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.tokens.inc(tokens)

    def watch(
        self,
        queue_depth: Callable[[], int],
        collections: Callable[[], dict[str, int]],
        search_paths: Callable[[], dict[str, int]],
    ) -> None:
        """Read at scrape time: the batcher's queue, the store's collection sizes, and how many
        searches ran on the event loop or on worker threads."""
        self.queue_depth.set_function(queue_depth)
        self.registry.register(_StoreCollector(collections, search_paths))

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, addr=host, registry=self.registry)


class _StoreCollector(Collector):
    def __init__(
        self, collections: Callable[[], dict[str, int]], search_paths: Callable[[], dict[str, int]]
    ) -> None:
        self._collections = collections
        self._search_paths = search_paths

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        g = GaugeMetricFamily("zembed_store_documents", "documents per collection", labels=["collection"])
        for name, count in sorted(self._collections().items()):
            g.add_metric([name], count)
        yield g
        c = CounterMetricFamily(
            "zembed_searches",
            "queries by where they ran: alone on the event loop or a thread, or in a batch",
            labels=["on"],
        )
        for path, count in sorted(self._search_paths().items()):
            c.add_metric([path], count)
        yield c
