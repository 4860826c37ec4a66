"""The application's side of `spec.analysis`: search metrics labelled with the version
that served each answer.

An analysis can only judge a version by numbers that say which version produced
them. `ReleaseClient` already knows: every `Answer` carries the `version` and the
`collection` that served it. This module turns answers into three Prometheus series
per (alias, version):

    search_requests_total          every answered query
    search_zero_results_total      queries with no hit at or above `min_score`
    search_latency_seconds         the search's wall time (a histogram)

so that a release's analysis can ask, for instance, for the zero-result rate of the
version it is releasing (docs/analysis.md):

    sum(rate(search_zero_results_total{alias="{{alias}}", version="{{version}}"}[1m]))
      / sum(rate(search_requests_total{alias="{{alias}}", version="{{version}}"}[1m]))

Use it as a library (`SearchMetrics.observe` after each search) or run it as a tiny
service that searches a list of texts in a loop and serves /metrics:

    python examples/analysis/search_metrics.py --uri http://milvus:19530 \
        --alias products --queries queries.txt --port 9400
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

UNKNOWN_VERSION = "unknown"  # a collection embrel did not build has no embrel.version


class ServedAnswer(Protocol):
    """What `controller.client.Answer` offers: the hits and who served them."""

    hits: list[dict[str, Any]]
    version: str | None


class SearchMetrics:
    """Counters and a latency histogram per (alias, version), in ``registry``."""

    def __init__(self, registry: CollectorRegistry, min_score: float = 0.0) -> None:
        labels = ["alias", "version"]
        self.min_score = min_score
        self.requests = Counter("search_requests", "Queries answered", labels, registry=registry)
        self.zero_results = Counter(
            "search_zero_results",
            "Queries with no hit at or above the relevance score",
            labels,
            registry=registry,
        )
        self.latency = Histogram(
            "search_latency_seconds", "Search wall time", labels, registry=registry
        )

    def observe(self, alias: str, answers: Iterable[ServedAnswer], seconds: float) -> None:
        """Count one search call: each answer under the version that served it."""
        for answer in answers:
            version = answer.version or UNKNOWN_VERSION
            self.requests.labels(alias, version).inc()
            # Created at 0 with the first answer: a version that never answers empty
            # must still have the series, or the rate's ratio has no value at all.
            zero_results = self.zero_results.labels(alias, version)
            if not any(_score(hit) >= self.min_score for hit in answer.hits):
                zero_results.inc()
            self.latency.labels(alias, version).observe(seconds)


def _score(hit: Mapping[str, Any]) -> float:
    """The similarity of a hit (COSINE and IP: larger is closer, as pymilvus returns it)."""
    return float(hit.get("distance", float("-inf")))


def serve(
    uri: str, alias: str, texts: Sequence[str], port: int, min_score: float, pause: float
) -> None:  # pragma: no cover - a long-running loop; SearchMetrics is what the tests drive
    from controller.client import ReleaseClient

    registry = CollectorRegistry()
    metrics = SearchMetrics(registry, min_score)
    start_http_server(port, registry=registry)
    client = ReleaseClient(uri, alias)
    print(f"searching {alias} at {uri}; metrics on :{port}/metrics", flush=True)
    while True:
        for text in texts:
            started = time.monotonic()
            answers = client.search_text([text], limit=10)
            metrics.observe(alias, answers, time.monotonic() - started)
            time.sleep(pause)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--uri", required=True, help="Milvus URI")
    p.add_argument("--alias", required=True, help="the release's alias")
    p.add_argument("--queries", type=Path, required=True, help="one query text per line")
    p.add_argument("--port", type=int, default=9400, help="where /metrics is served")
    p.add_argument("--min-score", type=float, default=0.3, help="a hit below it is no result")
    p.add_argument("--pause", type=float, default=0.1, help="seconds between queries")
    args = p.parse_args(argv)
    texts = [t for t in args.queries.read_text().splitlines() if t.strip()]
    serve(args.uri, args.alias, texts, args.port, args.min_score, args.pause)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
