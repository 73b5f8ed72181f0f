"""The server's metrics in Prometheus' text format, kept in memory by each worker process.

Hand-written rather than `prometheus_client`: a few counters and histograms need no dependency. Each
worker counts its own requests (Prometheus sums them when it scrapes every worker, or reads the usage
store for the totals across workers and replicas).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

__all__ = ["Metrics"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds of the latency histograms, in seconds."""

_Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: _Labels, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [*labels, *extra]
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}" if pairs else ""


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1


class Metrics:
    """Counters and latency histograms per mix and per model; thread-safe."""

    _HELP: ClassVar[dict[str, tuple[str, str]]] = {
        "moai_requests_total": ("counter", "Chat completion requests, by mix and HTTP status."),
        "moai_errors_total": ("counter", "Requests that ended in an error, by mix and error code."),
        "moai_tokens_total": ("counter", "Tokens of every model call, by mix, model and direction."),
        "moai_cost_usd_total": ("counter", "US dollars spent on model calls, by mix and model."),
        "moai_model_calls_total": ("counter", "Model calls, by mix, model and status."),
        "moai_gate_selected_total": ("counter", "Times the gate selected a model, by mix and model."),
        "moai_gate_cache_hits_total": ("counter", "Runs whose gate took its scores from the routing cache, by mix."),
        "moai_request_duration_seconds": ("histogram", "Time to answer a request, by mix."),
        "moai_model_latency_seconds": ("histogram", "Latency of each model call, by mix and model."),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[_Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[str, dict[_Labels, _Histogram]] = defaultdict(lambda: defaultdict(_Histogram))

    def request(self, mix: str, status: int, seconds: float, code: str | None = None) -> None:
        """Count a finished request (an error one too) and its duration."""
        with self._lock:
            self._counters["moai_requests_total"][(("mix", mix), ("status", str(status)))] += 1
            if status >= 400:
                self._counters["moai_errors_total"][(("mix", mix), ("code", code or str(status)))] += 1
            self._histograms["moai_request_duration_seconds"][(("mix", mix),)].observe(seconds)

    def run(self, mix: str, metadata: Mapping[str, Any]) -> None:
        """Count what a run did: its model calls (tokens, cost, latency), the gate's choices and cache hits."""
        with self._lock:
            for call in metadata.get("calls", []):
                model = (("mix", mix), ("model", str(call["model"])))
                tokens = self._counters["moai_tokens_total"]
                tokens[(*model, ("direction", "in"))] += call["tokens_in"]
                tokens[(*model, ("direction", "out"))] += call["tokens_out"]
                self._counters["moai_cost_usd_total"][model] += call["cost_usd"]
                self._counters["moai_model_calls_total"][(*model, ("status", str(call["status"])))] += 1
                self._histograms["moai_model_latency_seconds"][model].observe(call["latency_s"])
            for name in metadata.get("selected", []):
                self._counters["moai_gate_selected_total"][(("mix", mix), ("model", str(name)))] += 1
            if metadata.get("cache_hit"):
                self._counters["moai_gate_cache_hits_total"][(("mix", mix),)] += 1

    def render(self) -> str:
        """Return every metric in Prometheus' text exposition format."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in self._HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    for labels, value in sorted(self._counters[name].items()):
                        lines.append(f"{name}{_labels(labels)} {value:g}")
                    continue
                for labels, histogram in sorted(self._histograms[name].items()):
                    for bound, count in zip(BUCKETS, histogram.counts, strict=True):
                        lines.append(f"{name}_bucket{_labels(labels, [('le', f'{bound:g}')])} {count}")
                    lines.append(f"{name}_bucket{_labels(labels, [('le', '+Inf')])} {histogram.n}")
                    lines.append(f"{name}_sum{_labels(labels)} {histogram.total:g}")
                    lines.append(f"{name}_count{_labels(labels)} {histogram.n}")
        return "\n".join(lines) + "\n"
