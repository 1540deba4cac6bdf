"""Prometheus metrics: one registry per daemon, families declared here, children bound once.

Names follow Prometheus conventions (``ocs_`` prefix, base units, ``_total``, ``_seconds``).
Labels are bounded sets (protocol, message type, outcome, reason, cause); never an account or a
session id. Hot paths hold bound children instead of calling ``.labels()``.

The families counted per request (requests, latency, drops, decisions, Diameter answers ...)
are ``LocalCounter``/``LocalHistogram``: plain numbers on the event loop's thread, read by
the registry only when it is scraped (``.inc()`` ≈ 0.08 µs, ``.observe()`` ≈ 0.3 µs, against
≈ 0.7 and 1.6 µs for prometheus-client's locked values). Only the event loop's thread may
count into them; families counted from other threads (the log handler, the collector's
callbacks) stay prometheus-client's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    gc_collector,
    platform_collector,
    process_collector,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ocs import __version__
from ocs.tally import LocalCounterChild, LocalHistogramChild

# The *_created series double every counter's output for little use on dashboards.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

DIAMETER_PEER_STATES = ("wait-cer", "open", "closing", "wait-disconnect")

DROP_CAUSES = (
    "unknown_client",
    "bad_authenticator",
    "missing_message_authenticator",
    "proxy_state_without_message_authenticator",
    "malformed",
    "wrong_code",
    "queue_full",
    "receive_buffer_full",  # the kernel dropped it: the socket's receive buffer was full
    "too_many_pending",
    "duplicate_in_progress",
    "database_unavailable",
    "spool_full",
    "refused_by_database",
    "internal_error",
    "relay_timeout",  # relayed to the worker of its admission, which did not answer in time
)

# Diameter: why a request went unanswered (or was answered without being processed), and why
# a peer connection was closed by us. Bounded label sets, bound once by the server.
DIAMETER_DROP_CAUSES = (
    "malformed",
    "unsolicited_answer",
    "duplicate_in_progress",
    "too_many_pending",
    "peer_gone",
    "internal_error",
)
DIAMETER_CLOSE_REASONS = (
    "cer_timeout",
    "read_timeout",
    "watchdog",
    "too_many_connections",
    "evicted_idle",
    "framing_error",
    "unknown_peer",
    "cer_refused",
    "protocol_error",
    "peer_dpr",
    "dpa_timeout",
    "shutdown",
    "internal_error",
)


class _LocalFamily:
    """A labelled family of local children, collected when the registry is scraped."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        if not self.labelnames:
            self._children[()] = self._new_child()
        registry.register(self)  # type: ignore[arg-type]

    def _new_child(self) -> object:
        raise NotImplementedError

    def _child(self, values: tuple[str, ...]) -> object:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            child = self._children[values] = self._new_child()
        return child

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def _family(self) -> Metric:
        raise NotImplementedError

    def _items(self) -> list[tuple[tuple[str, ...], object]]:
        # A copy: the event loop may add a child while a scrape in another thread reads.
        return list(self._children.items())


class LocalCounter(_LocalFamily):
    """A counter family kept in plain floats (module docstring)."""

    # Counts kept elsewhere, added when scraped (count_from).
    _sources: tuple[Callable[[], Mapping[str, int]], ...] = ()

    def _new_child(self) -> LocalCounterChild:
        return LocalCounterChild()

    def labels(self, *values: str) -> LocalCounterChild:
        return self._child(tuple(str(v) for v in values))  # type: ignore[return-value]

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def _family(self) -> Metric:
        name = self.name[: -len("_total")] if self.name.endswith("_total") else self.name
        return CounterMetricFamily(name, self.documentation, labels=self.labelnames)

    def count_from(self, read: Callable[[], Mapping[str, int]]) -> None:
        """Add, when scraped, counts kept elsewhere by the event loop (``read()``: label value
        to count, for a family of one label), so that the hot path counts once, in its own
        figures (``Charging.stats.decisions``)."""
        if len(self.labelnames) != 1:
            raise ValueError(f"{self.name}: count_from needs a family of one label")
        self._sources = (*self._sources, read)

    def collect(self) -> Iterator[Metric]:
        name = self.name[: -len("_total")] if self.name.endswith("_total") else self.name
        family = CounterMetricFamily(name, self.documentation, labels=self.labelnames)
        totals: dict[tuple[str, ...], float] = {}
        for values, child in self._items():
            assert isinstance(child, LocalCounterChild)
            totals[values] = child.value
        for read in self._sources:
            for label, count in dict(read()).items():  # a copy, made at once (the GIL)
                totals[(label,)] = totals.get((label,), 0.0) + count
        for values, value in totals.items():
            family.add_metric(list(values), value)
        yield family


class LocalHistogram(_LocalFamily):
    """A histogram family kept in plain lists (module docstring)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets if b != float("inf"))
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> LocalHistogramChild:
        return LocalHistogramChild(self.bounds)

    def labels(self, *values: str) -> LocalHistogramChild:
        return self._child(tuple(str(v) for v in values))  # type: ignore[return-value]

    def observe(self, amount: float) -> None:
        self.labels().observe(amount)

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [_bound_text(b) for b in self.bounds] + ["+Inf"]
        for values, child in self._items():
            assert isinstance(child, LocalHistogramChild)
            counts = list(child.counts)  # one reading: the buckets agree with each other
            running = 0
            buckets = []
            for edge, count in zip(edges, counts, strict=True):
                running += count
                buckets.append((edge, float(running)))
            family.add_metric(list(values), buckets, child.sum)
        yield family


def _bound_text(bound: float) -> str:
    """A bucket bound as prometheus-client writes it (``0.001``, ``1.0``)."""
    return repr(float(bound))


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        Info("ocs_build", "Version of the running ocsd.", registry=r).info({"version": __version__})

        self.requests = LocalCounter(
            "ocs_requests_total",
            "Requests answered, by protocol, message type and outcome.",
            ["protocol", "type", "outcome"],
            registry=r,
        )
        self.latency = LocalHistogram(
            "ocs_request_duration_seconds",
            "Time from a request's arrival to its answer being sent.",
            ["protocol", "type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dropped = LocalCounter(
            "ocs_dropped_packets_total",
            "Requests dropped without an answer, by protocol and cause.",
            ["protocol", "cause"],
            registry=r,
        )
        self.invalid_identities = LocalCounter(
            "ocs_invalid_identities_total",
            "Identities refused before any lookup (answered as unknown), by protocol and cause "
            "(nul_byte, invalid_utf8, control_character, too_long, empty, malformed).",
            ["protocol", "cause"],
            registry=r,
        )
        self.database_refused = Counter(
            "ocs_database_refused_total",
            "Database operations PostgreSQL refused for their data (the input's fault; not "
            "counted as the database being down), by operation.",
            ["operation"],
            registry=r,
        )
        self.duplicates = LocalCounter(
            "ocs_duplicate_requests_total",
            "Retransmitted requests answered from the reply cache.",
            ["protocol"],
            registry=r,
        )
        self.radius_relayed = LocalCounter(
            "ocs_radius_relayed_total",
            "Accounting-Requests relayed between workers to the worker of their admission: "
            "out (sent to it and answered), in (handled here for another worker), "
            "handled_here (that worker could not be reached).",
            ["direction"],
            registry=r,
        )
        self.decisions = LocalCounter(
            "ocs_new_sessions_total",
            "New-session decisions, by result (admitted or the refusal reason).",
            ["result"],
            registry=r,
        )
        self.cache_lookups = Counter(
            "ocs_cache_lookups_total",
            "Account lookups by the pipeline: hit (decided from the cache) or miss.",
            ["result"],
            registry=r,
        )
        self.cache_entries = Gauge(
            "ocs_cache_entries", "Accounts in the in-process cache.", registry=r
        )
        self.cache_oldest_age = Gauge(
            "ocs_cache_oldest_entry_age_seconds",
            "Age of the least recently confirmed cache entry.",
            registry=r,
        )
        self.loader_duration = Gauge(
            "ocs_loader_last_duration_seconds",
            "How long the last full cache load took.",
            registry=r,
        )
        self.loader_last_success = Gauge(
            "ocs_loader_last_success_timestamp_seconds",
            "Unix time of the last successful full cache load or change poll.",
            registry=r,
        )
        self.accounts_loaded = Gauge(
            "ocs_loader_accounts_loaded", "Accounts read by the last full load.", registry=r
        )
        self.changes_applied = Counter(
            "ocs_loader_changes_applied_total",
            "Account snapshots reloaded because they changed (notifications and polls).",
            registry=r,
        )
        self.notification_lag = Gauge(
            "ocs_loader_notification_lag_seconds",
            "Time from a change's commit-time notification to its arrival here (last seen).",
            registry=r,
        )
        self.database_up = Gauge(
            "ocs_database_up",
            "1 while PostgreSQL answers the sidecar, 0 while it does not.",
            registry=r,
        )
        self.spool_bytes = Gauge(
            "ocs_spool_bytes",
            "Size of the local usage spool (usage waiting for PostgreSQL).",
            registry=r,
        )
        self.spool_records = Counter(
            "ocs_spool_records_total",
            "Usage records written to the spool, and replayed from it.",
            ["action"],
            registry=r,
        )
        self.spool_refused = Counter(
            "ocs_spool_refused_total",
            "Usage records neither PostgreSQL nor the spool could take (not acknowledged; the "
            "client retries), by reason: full (usage.spool_max_bytes), no_space, quota, io_error.",
            ["reason"],
            registry=r,
        )
        self.usage_commit_batch = Histogram(
            "ocs_usage_commit_batch_reports",
            "Usage reports per committed transaction (group commit: _count is transactions, "
            "_sum is reports).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.usage_batches_refused = Counter(
            "ocs_usage_batches_refused_total",
            "Usage batches PostgreSQL refused for one bad report, then written report by report.",
            registry=r,
        )
        self.usage_records = LocalCounter(
            "ocs_usage_reports_total",
            "Usage reports made durable, by protocol and result (charged, duplicate, unmatched).",
            ["protocol", "result"],
            registry=r,
        )
        self.charged = Counter(
            "ocs_charged_amount_total",
            "Amount charged for usage, in currency units (summed over all accounts).",
            registry=r,
        )
        self.active_sessions = Gauge(
            "ocs_active_sessions", "Sessions running, as this process counts them.", registry=r
        )
        self.reservations = Gauge(
            "ocs_reservations", "Credit reservations held for admitted sessions.", registry=r
        )
        # The session ledger (ocs.charging.pipeline): counters kept by the pipeline as plain
        # ints and published here once a second, off the request path.
        self.session_events = Counter(
            "ocs_session_events_total",
            "Session life events: expired (grant ended, no news: closed and charged its grant), "
            "rebuilt (holds rebuilt from the database at start-up).",
            ["event"],
            registry=r,
        )
        self.writes_behind = Counter(
            "ocs_session_writes_behind_total",
            "Session starts, holds and closes written behind the answers: written, coalesced "
            "(replaced or never needed), failed (kept for the next flush, or dropped when the "
            "queue is full).",
            ["result"],
            registry=r,
        )
        self.writes_behind_queued = Gauge(
            "ocs_session_writes_behind_queued",
            "Session changes waiting to be written behind the answers.",
            registry=r,
        )
        self.shared_admissions = Counter(
            "ocs_shared_admissions_total",
            "Admissions confirmed in Redis against the other instances (low credit, or an "
            "unsynced hold): confirmed, conflict (decided again), unavailable (decided locally).",
            ["result"],
            registry=r,
        )
        self.database_errors = Counter(
            "ocs_database_errors_total",
            "Database operations that failed (unreachable, timed out, refused).",
            registry=r,
        )
        self.stale_decisions = Counter(
            "ocs_stale_decisions_total",
            "New-session decisions made from figures older than cache.ttl_s (database away).",
            registry=r,
        )
        self.stale_policy = Counter(
            "ocs_stale_policy_applied_total",
            "Decisions past cache.max_stale_s, answered by the on_stale policy.",
            ["policy"],
            registry=r,
        )
        # Redis (redis.url): session counts and reservations shared with other instances.
        self.redis_up = Gauge(
            "ocs_redis_up",
            "1 while the Redis sync works; 0 while decisions use this instance's figures alone.",
            registry=r,
        )
        self.redis_errors = Counter(
            "ocs_redis_errors_total",
            "Redis sync rounds that failed (unreachable, timed out, refused).",
            registry=r,
        )
        self.redis_sync_duration = Histogram(
            "ocs_redis_sync_duration_seconds",
            "Time of one Redis sync round (publish, heartbeat, read the others' changes).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_instances = Gauge(
            "ocs_redis_instances",
            "Other live instances sharing session counts and reservations through Redis.",
            registry=r,
        )
        # Operations (ocs.ops): billing state counted in SQL, reloads, log rate limiting.
        self.accounts_below_threshold = Gauge(
            "ocs_accounts_below_warning_threshold",
            "Accounts with at least one warning threshold crossed and not yet re-armed.",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "ocs_outbox_pending_events",
            "Outbox events (warnings, webhooks) not yet delivered nor abandoned.",
            registry=r,
        )
        self.config_reloads = Counter(
            "ocs_config_reloads_total",
            "SIGHUP configuration reloads, by result (applied or refused).",
            ["result"],
            registry=r,
        )
        self.config_last_reload = Gauge(
            "ocs_config_last_reload_success_timestamp_seconds",
            "Unix time the configuration was last loaded successfully (start or reload).",
            registry=r,
        )
        self.log_lines_suppressed = Counter(
            "ocs_log_lines_suppressed_total",
            "Log lines left out by the rate limit (similar lines beyond the burst).",
            registry=r,
        )
        # Diameter peers by RFC 6733 state; the children of DIAMETER_PEER_STATES are created (at
        # 0) only when diameter.enabled, so "no Diameter peers" alerts only where it is served.
        self.diameter_peers = Gauge(
            "ocs_diameter_peers",
            "Diameter peer connections, by state (wait-cer, open, closing, wait-disconnect).",
            ["state"],
            registry=r,
        )
        # Diameter answers and connections (diameter.enabled; peers by state above).
        self.diameter_answers = LocalCounter(
            "ocs_diameter_answers_total",
            "Diameter requests answered, by command (CER, DWR, DPR, CCR-I/U/T/E, CCR for "
            "refused ones, other) and Result-Code.",
            ["command", "result_code"],
            registry=r,
        )
        self.diameter_mscc_results = LocalCounter(
            "ocs_diameter_mscc_results_total",
            "Multiple-Services-Credit-Control answers, by command and their own Result-Code.",
            ["command", "result_code"],
            registry=r,
        )
        self.diameter_peer_answers = Counter(
            "ocs_diameter_peer_answers_total",
            "Answers received from peers to our own requests (DWA, DPA), by command and "
            "Result-Code.",
            ["command", "result_code"],
            registry=r,
        )
        self.diameter_tolerances = LocalCounter(
            "ocs_diameter_tolerances_total",
            "CCRs accepted although a strict reading would refuse them, by tolerance "
            "(base_avp, auth_application_id_in_vsai, duplicate_origin_host, "
            "duplicate_origin_realm, sip_uri_normalized): real clients' quirks, counted.",
            ["tolerance"],
            registry=r,
        )
        self.diameter_connections_closed = Counter(
            "ocs_diameter_connections_closed_total",
            "Diameter connections closed by ocsd, by reason.",
            ["reason"],
            registry=r,
        )
        self.gc_pause = Histogram(
            "ocs_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation (they stall requests).",
            ["generation"],
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.loop_lag = Gauge(
            "ocs_event_loop_lag_seconds",
            "How late the event loop ran a 0.1 s timer, worst of the last second.",
            registry=r,
        )
