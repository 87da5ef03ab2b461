"""Prometheus metrics (text format on an HTTP port): requests and latency per RPC, batch sizes,
queue depth and queued work (per latency lane too), tokens, store size, free space on the data volume.

The endpoint lists every collection's name and size, so it is not public: it listens on
``--metrics-host`` (default 127.0.0.1), and whenever the service has a token, ``/metrics`` requires
the same ``Authorization: Bearer <token>`` (Prometheus: ``authorization: {credentials_file: ...}``),
served over HTTPS with the gRPC port's certificate when TLS is on.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from zembed.service.auth import bearer_matches, expected_token
from zembed.store import scan


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
        self.queued_seconds = Gauge(
            "zembed_queue_seconds",
            "estimated seconds of inference work waiting (the admission bound)",
            registry=r,
        )
        self.free_bytes = Gauge("zembed_data_free_bytes", "free bytes on the data volume", registry=r)
        self.scan_kernel = Info(
            "zembed_scan", "the Hamming scan kernel this CPU runs and the threads one scan uses", registry=r
        )
        self.scan_kernel.info({"kernel": scan.kernel_name(), "threads": str(scan.threads())})
        self.http: ThreadingHTTPServer | None = None

    def on_batch(self, size: int, tokens: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.tokens.inc(tokens)

    def watch(
        self,
        queue_depth: Callable[[], int],
        collections: Callable[[], dict[str, int]],
        search_paths: Callable[[], dict[str, int]],
        *,
        free_bytes: Callable[[], int] | None = None,
        queued_seconds: Callable[[], float] | None = None,
        lanes: Callable[[], LaneFigures] | None = None,
    ) -> None:
        """Read at scrape time: the batcher's queue, the store's collection sizes, how many searches
        ran on the event loop or on worker threads, free space on the data volume, and the embedding
        queue's latency lanes (inputs waiting and taken per lane, and how often one lane went ahead
        of the other)."""
        self.queue_depth.set_function(queue_depth)
        if lanes is not None:
            self.registry.register(_LaneCollector(lanes))
        if free_bytes is not None:
            self.free_bytes.set_function(free_bytes)
        if queued_seconds is not None:
            self.queued_seconds.set_function(queued_seconds)
        self.registry.register(_StoreCollector(collections, search_paths))

    def serve(
        self,
        port: int,
        host: str = "127.0.0.1",
        token: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> int:
        """Serve ``/metrics`` on ``host:port`` in a daemon thread, requiring ``Authorization: Bearer
        <token>`` when ``token`` is set and over HTTPS with ``tls`` (cert, key: the gRPC port's), so
        the token never crosses the network in clear; returns the bound port."""
        registry = self.registry
        expected = expected_token(token)

        class MetricsHandler(BaseHTTPRequestHandler):
            timeout = 10  # seconds a connection may stay silent (handshake, request line, headers)

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(self.timeout)
                    self.request.do_handshake()
                super().setup()

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                if expected is not None:
                    given = self.headers.get_all("Authorization") or []
                    if len(given) != 1 or not bearer_matches(given[0], expected):
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Bearer realm="zembed metrics"')
                        self.end_headers()
                        return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # no access log
                pass

        self.http = ThreadingHTTPServer((host, port), MetricsHandler)
        self.http.daemon_threads = True
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls[0], tls[1])
            # the handshake happens in each request's own thread (MetricsHandler.setup), not in
            # accept(): one silent connection must not stall every scrape
            self.http.socket = ctx.wrap_socket(
                self.http.socket, server_side=True, do_handshake_on_connect=False
            )
        threading.Thread(target=self.http.serve_forever, name="zembed-metrics", daemon=True).start()
        return int(self.http.server_address[1])

    def close(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None


@dataclass(frozen=True)
class LaneFigures:
    """The embedding queue's lanes at one moment (service/batcher.py, the ``latency`` modes)."""

    waiting: dict[str, int]  # lane -> inputs queued
    taken: dict[str, int]  # lane -> inputs taken into batches since start
    events: dict[str, int]  # overtake / forced / yielded -> count since start


class _LaneCollector(Collector):
    def __init__(self, figures: Callable[[], LaneFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        f = self._figures()
        g = GaugeMetricFamily("zembed_lane_queue_depth", "inputs waiting per latency lane", labels=["lane"])
        for lane, n in sorted(f.waiting.items()):
            g.add_metric([lane], n)
        yield g
        c = CounterMetricFamily(
            "zembed_lane_inputs", "inputs taken into inference batches per latency lane", labels=["lane"]
        )
        for lane, n in sorted(f.taken.items()):
            c.add_metric([lane], n)
        yield c
        e = CounterMetricFamily(
            "zembed_lane_events",
            "overtake: a fast batch taken while slow inputs waited; forced: a slow batch taken ahead "
            "of waiting fast inputs (the overtake bound); yielded: slow inputs put back so fast ones "
            "ran between sub-batches",
            labels=["event"],
        )
        for event, n in sorted(f.events.items()):
            e.add_metric([event], n)
        yield e


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
