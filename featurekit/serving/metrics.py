"""Prometheus metrics for the feature server, in the text exposition format (0.0.4).

Small and dependency-free: counters and fixed-bucket histograms behind one lock, rendered
on scrape. Store freshness is read from the online store's snapshot metadata at scrape
time, so it is never stale; so are data quality and drift, from the store's check and drift
logs (written by materialization and by ``store.drift``/``featurekit monitor``):

* ``featurekit_view_validation_failures{view,check,severity}``: failing rows of each check
  in the view's latest checked run (refused or committed);
* ``featurekit_view_validation_refused_runs{view}``: runs refused by an error-level check;
* ``featurekit_feature_drift{view,feature,metric}``: the latest drift value per feature and
  metric; ``featurekit_feature_drifted{view,feature}``: 1 when it drifted on any metric.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Sequence

from featurekit.online.lookup import ViewStats
from featurekit.storage.layout import StoreLayout

__all__ = ["Metrics"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds


class Metrics:
    """Request counts and latencies per endpoint and per view; lookup outcomes per view."""

    def __init__(self, layout: StoreLayout | None = None) -> None:
        #: the store whose check and drift logs are exported (None: not exported)
        self.layout = layout
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._latency: dict[str, _Histogram] = {}
        self._view_latency: dict[tuple[str, str], _Histogram] = {}
        self._view_requests: dict[tuple[str, str], int] = {}
        self._outcomes: dict[tuple[str, str, str], int] = {}

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one HTTP request and its latency."""
        with self._lock:
            key = (endpoint, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            histogram = self._latency.get(endpoint)
            if histogram is None:  # not setdefault: that builds a histogram every request
                histogram = self._latency[endpoint] = _Histogram()
            histogram.observe(seconds)

    def lookup(self, stats: Sequence[ViewStats], seconds: float) -> None:
        """Count one feature lookup per view it read, with its outcome counts."""
        with self._lock:
            for s in stats:
                key = (s.view, str(s.version))
                self._view_requests[key] = self._view_requests.get(key, 0) + 1
                histogram = self._view_latency.get(key)
                if histogram is None:
                    histogram = self._view_latency[key] = _Histogram()
                histogram.observe(seconds)
                for status, n in (
                    ("present", s.present),
                    ("expired", s.expired),
                    ("not_found", s.not_found),
                ):
                    if n:
                        k3 = (*key, status)
                        self._outcomes[k3] = self._outcomes.get(k3, 0) + n

    def render(self, snapshots: Iterable[tuple[str, int, int, int | None]]) -> str:
        """Exposition text; ``snapshots`` are (view, version, taken_us, max_event_us)."""
        lines: list[str] = []
        with self._lock:
            _counter(
                lines,
                "featurekit_http_requests_total",
                "HTTP requests by endpoint and status code.",
                {("endpoint", e, "code", c): n for (e, c), n in self._requests.items()},
            )
            _histograms(
                lines,
                "featurekit_http_request_duration_seconds",
                "HTTP request latency by endpoint.",
                {("endpoint", e): h for e, h in self._latency.items()},
            )
            _counter(
                lines,
                "featurekit_view_requests_total",
                "Feature lookups that read each view version.",
                {("view", v, "version", n): c for (v, n), c in self._view_requests.items()},
            )
            _histograms(
                lines,
                "featurekit_view_request_duration_seconds",
                "Latency of feature lookups that read each view version.",
                {("view", v, "version", n): h for (v, n), h in self._view_latency.items()},
            )
            outcomes = self._outcomes
            _counter(
                lines,
                "featurekit_view_lookup_entities_total",
                "Entities looked up per view version, by status (present, expired, not_found).",
                {("view", v, "version", n, "status", s): c for (v, n, s), c in outcomes.items()},
            )
            _counter(
                lines,
                "featurekit_view_lookup_misses_total",
                "Entities with no value (not_found) per view version.",
                _with_status(outcomes, "not_found"),
            )
            _counter(
                lines,
                "featurekit_view_lookup_expired_total",
                "Entities whose value was older than the view's TTL, per view version.",
                _with_status(outcomes, "expired"),
            )
        now = time.time()
        fresh: dict[tuple[str, ...], float] = {}
        age: dict[tuple[str, ...], float] = {}
        for view, version, taken_us, max_event_us in snapshots:
            labels = ("view", view, "version", str(version))
            fresh[labels] = max(0.0, now - taken_us / 1e6)
            if max_event_us is not None:
                age[labels] = now - max_event_us / 1e6
        _gauge(
            lines,
            "featurekit_view_freshness_seconds",
            "Seconds since the view version's online snapshot was written (materialized).",
            fresh,
        )
        _gauge(
            lines,
            "featurekit_view_latest_event_age_seconds",
            "Seconds since the newest event time in the view version's online snapshot.",
            age,
        )
        if self.layout is not None:
            _quality(lines, self.layout)
        return "\n".join(lines) + "\n"


def _labels(pairs: tuple[str, ...]) -> str:
    items = [f'{pairs[i]}="{_escape(pairs[i + 1])}"' for i in range(0, len(pairs), 2)]
    return "{" + ",".join(items) + "}" if items else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _counter(lines: list[str], name: str, help_: str, values: dict[tuple[str, ...], int]) -> None:
    lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
    lines += [f"{name}{_labels(k)} {v}" for k, v in sorted(values.items())]


def _gauge(lines: list[str], name: str, help_: str, values: dict[tuple[str, ...], float]) -> None:
    lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
    lines += [f"{name}{_labels(k)} {v:.6f}" for k, v in sorted(values.items())]


def _histograms(
    lines: list[str], name: str, help_: str, values: dict[tuple[str, ...], _Histogram]
) -> None:
    lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
    for key, hist in sorted(values.items()):
        running = 0
        for bound, count in zip(BUCKETS, hist.counts, strict=False):
            running += count
            lines.append(f"{name}_bucket{_labels((*key, 'le', repr(bound)))} {running}")
        lines.append(f"{name}_bucket{_labels((*key, 'le', '+Inf'))} {hist.count}")
        lines.append(f"{name}_sum{_labels(key)} {hist.total:.9f}")
        lines.append(f"{name}_count{_labels(key)} {hist.count}")


def _with_status(
    outcomes: dict[tuple[str, str, str], int], status: str
) -> dict[tuple[str, ...], int]:
    """Per view version, the entities looked up with ``status``."""
    return {("view", v, "version", n): c for (v, n, s), c in outcomes.items() if s == status}


def _quality(lines: list[str], layout: StoreLayout) -> None:
    """Validation and drift gauges from the store's logs (skipped while they cannot be read)."""
    from featurekit.core.errors import FeatureKitError
    from featurekit.offline.monitoring import latest_drift
    from featurekit.offline.quality import latest_checks

    try:
        checks, drift = latest_checks(layout), latest_drift(layout)
    except FeatureKitError:
        return
    _gauge(
        lines,
        "featurekit_view_validation_failures",
        "Failing rows per check in the view's latest checked materialization run.",
        {
            ("view", v, "check", c, "severity", s): float(n)
            for v, c, s, n in checks.select("view", "name", "severity", "failing").iter_rows()
        },
    )
    _gauge(
        lines,
        "featurekit_view_validation_refused_runs",
        "Materialization runs refused by an error-level check, per view.",
        {
            ("view", v): float(n)
            for v, n in checks.select("view", "refused_runs").unique().iter_rows()
        },
    )
    values: dict[tuple[str, ...], float] = {}
    drifted: dict[tuple[str, ...], float] = {}
    if drift.height:
        for v, f, m, value, flag in drift.select(
            "view", "feature", "metric", "value", "drifted"
        ).iter_rows():
            values[("view", v, "feature", f, "metric", m)] = value
            key = ("view", v, "feature", f)
            drifted[key] = max(drifted.get(key, 0.0), 1.0 if flag else 0.0)
    _gauge(lines, "featurekit_feature_drift", "Latest drift value per feature and metric.", values)
    _gauge(
        lines,
        "featurekit_feature_drifted",
        "1 when the feature drifted on any metric in its latest drift report, else 0.",
        drifted,
    )
