"""One operations endpoint for a supervisor's workers (``daemon.workers`` > 1).

Rules of this file:
- The supervisor serves ``metrics.listen`` itself; each worker serves its own endpoint on a
  free loopback port and tells the supervisor which (``ocs.app``). Every request here asks
  every worker, at most ``WORKER_TIMEOUT_S`` each, in threads: nothing here touches a
  worker's event loop beyond its own HTTP endpoint.
- ``/metrics``: one exposition for the whole daemon. Counters, histograms and summaries are
  summed over the workers (series by name and labels); gauges (and info) keep one series per
  worker with a ``worker`` label, since a sum means nothing for most of them (every worker
  holds the whole cache). A worker that does not answer is left out and counted in
  ``ocs_workers_unreachable``; ``ocs_workers`` says how many there are.
- ``/healthz`` is 200 while every worker answers its own; ``/readyz`` 200 while every worker
  is ready, else 503 with each worker's answer; ``/status`` lists every worker's status
  (``ocs status`` prints them all).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("ocs.ops")

WORKER_TIMEOUT_S = 2.0
SUMMED_TYPES = frozenset(("counter", "histogram", "summary", "gaugehistogram"))


class Worker:
    """One worker as the supervisor knows it."""

    __slots__ = ("index", "pid", "port")

    def __init__(self, index: int, pid: int, port: int) -> None:
        self.index = index
        self.pid = pid
        self.port = port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _fetch(worker: Worker, path: str) -> tuple[int, bytes] | None:
    """(HTTP status, body) of a worker's endpoint, or None when it does not answer."""
    if not worker.port:
        return None
    try:
        with urllib.request.urlopen(worker.url(path), timeout=WORKER_TIMEOUT_S) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def merge_expositions(texts: Iterable[tuple[int, str]]) -> list[Metric]:
    """The workers' Prometheus texts (worker index, text) as one set of families (module
    rules: summed, or a series per worker for gauges)."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for index, text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                sums[family.name] = {}
            if family.type in SUMMED_TYPES:
                series = sums[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    series[key] = series.get(key, 0.0) + sample.value
            else:
                for sample in family.samples:
                    labels = dict(sample.labels, worker=str(index))
                    merged.add_sample(sample.name, labels, sample.value)
    for name, series in sums.items():
        merged = families[name]
        for (sample_name, pairs), value in series.items():
            merged.add_sample(sample_name, dict(pairs), value)
    return list(families.values())


class _Merged:
    """A collector that yields what ``merge_expositions`` made (for ``generate_latest``)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class WorkerAggregator:
    """The supervisor's endpoint (module rules)."""

    def __init__(self, workers: Iterable[tuple[int, int, int]], *, supervisor_pid: int) -> None:
        self.workers = [Worker(index, pid, port) for index, pid, port in workers]
        self.supervisor_pid = supervisor_pid
        self._pool = ThreadPoolExecutor(max_workers=max(len(self.workers), 1))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _ask_all(self, path: str) -> list[tuple[Worker, tuple[int, bytes] | None]]:
        answers = list(self._pool.map(lambda w: _fetch(w, path), self.workers))
        return list(zip(self.workers, answers, strict=True))

    # --- the answers ------------------------------------------------------------------------

    def metrics(self) -> bytes:
        answers = self._ask_all("/metrics")
        texts = [(w.index, a[1].decode()) for w, a in answers if a is not None and a[0] == 200]
        unreachable = len(answers) - len(texts)
        registry = CollectorRegistry(auto_describe=False)
        own = [
            _gauge("ocs_workers", "Worker processes of this daemon.", len(self.workers)),
            _gauge(
                "ocs_workers_unreachable",
                "Workers whose metrics endpoint did not answer this scrape (left out).",
                unreachable,
            ),
        ]
        registry.register(_Merged(own + merge_expositions(texts)))
        return generate_latest(registry)

    def health(self) -> tuple[int, bytes]:
        answers = self._ask_all("/healthz")
        down = [w.index for w, a in answers if a is None or a[0] != 200]
        if down:
            return 503, f"workers not answering: {down}\n".encode()
        return 200, b"ok\n"

    def readiness(self) -> tuple[int, dict[str, Any]]:
        answers = self._ask_all("/readyz")
        detail: dict[str, Any] = {"workers": []}
        ready = True
        for worker, answer in answers:
            item: dict[str, Any] = {"worker": worker.index, "pid": worker.pid}
            if answer is None:
                item["ready"] = False
                item["reason"] = "not answering"
            else:
                item["ready"] = answer[0] == 200
                item.update(_json_or_text(answer[1]))
            ready = ready and bool(item["ready"])
            detail["workers"].append(item)
        detail["ready"] = ready
        return (200 if ready else 503), detail

    def status(self) -> dict[str, Any]:
        workers = []
        for worker, answer in self._ask_all("/status"):
            item: dict[str, Any] = {"worker": worker.index, "pid": worker.pid}
            if answer is None or answer[0] != 200:
                item["error"] = "not answering"
            else:
                item.update(_json_or_text(answer[1]))
            workers.append(item)
        return {"supervisor_pid": self.supervisor_pid, "workers": workers}

    # --- the server -------------------------------------------------------------------------

    def start(self, host: str, port: int) -> int:
        """Serve on ``host:port`` in a thread; returns the bound port. Raises OSError."""
        aggregator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the stdlib's name
                self._answer(body=True)

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def _answer(self, *, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    status, content_type, data = aggregator.route(path)
                except Exception:  # the one boundary: a bug in a report must not kill it
                    log.exception("supervisor endpoint: %s failed", path)
                    status, content_type, data = 500, "text/plain", b"internal error\n"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes are not worth a log line each

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ocs-supervisor-http", daemon=True
        )
        self._thread.start()
        return int(self._server.server_address[1])

    def route(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self.metrics()
        if path == "/healthz":
            status, text = self.health()
            return status, "text/plain", text
        if path == "/readyz":
            status, detail = self.readiness()
            return status, "application/json", json.dumps(detail).encode()
        if path == "/status":
            return 200, "application/json", json.dumps(self.status()).encode()
        return 404, "text/plain", b"not found: try /metrics, /healthz, /readyz, /status\n"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _gauge(name: str, documentation: str, value: float) -> Metric:
    metric = Metric(name, documentation, "gauge")
    metric.add_sample(name, {}, float(value))
    return metric


def _json_or_text(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {"detail": body.decode("utf-8", "replace")[:200]}
    return data if isinstance(data, dict) else {"detail": data}
