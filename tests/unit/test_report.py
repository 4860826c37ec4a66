"""The validation report: files present, real PNGs, escaped HTML, Markdown table, determinism."""

from __future__ import annotations

import base64
import html
import io
import re
from functools import cache

import numpy as np
import pytest
from matplotlib.image import imread

from controller.validation.report import format_value, render_report
from controller.validation.results import Check, Outcome, ValidationRun

PLOTS = {"cosine.png", "recall.png", "latency.png"}
TEXTS = {"report.md", "report.html"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_SHAPE = (400, 720, 4)  # FIG_SIZE 7.2 x 4.0 inches at 100 dpi, RGBA
HOSTILE = "<script>alert('x')</script>&docs"


def failing_run() -> ValidationRun:
    rng = np.random.default_rng(7)
    cosines = np.concatenate([rng.uniform(0.92, 1.0, 180), rng.uniform(0.6, 0.9, 20), [np.nan]])
    return ValidationRun(
        release="docs-search",
        version="v7",
        candidate="docs_search_v7",
        live="docs_search_v6",
        live_version="v6",
        checks=[
            Check("rowCount", 20000.0, 20000.0, Outcome.PASSED, "collection rows vs source rows"),
            Check(
                "cosineDrift",
                0.812345,
                0.9,
                Outcome.FAILED,
                "p5 of per-id cosine below threshold",
                metrics={"mean": 0.961234, "share_below": 0.1, "n": 200.0},
            ),
            Check(
                "recall@10",
                0.95321,
                0.9,
                Outcome.PASSED,
                "candidate vs exact top-k",
                metrics={"rbo": 0.876543, "overlap": 0.9},
            ),
            Check(
                "latencyP99",
                48.123,
                40.0,
                Outcome.FAILED,
                "p99 search latency (ms)",
                comparison="<=",
                metrics={"p50": 12.3456, "p99": 48.123},
            ),
            Check("ndcg@10", None, None, Outcome.INCONCLUSIVE, "no relevance labels"),
        ],
        query_set="queries/docs.parquet (500 queries)",
        search_params={"metric_type": "COSINE", "limit": 10, "params": {"ef": 64}},
        cosines=cosines,
        recall_curve={
            "candidate": [0.8, 0.86, 0.9, 0.92, 0.93],
            "live": [0.82, 0.88, 0.91, 0.93, 0.95],
        },
        latencies_ms={
            "candidate": list(rng.gamma(4.0, 4.0, 300)),
            "live": list(rng.gamma(4.0, 3.0, 300)),
        },
    )


def passing_run() -> ValidationRun:
    """Passes, with a recall curve for the candidate only and latency for both."""
    return ValidationRun(
        release="docs-search",
        version="v8",
        candidate="docs_search_v8",
        live="docs_search_v7",
        live_version="v7",
        checks=[
            Check("recall@10", 0.97, 0.9, Outcome.PASSED, "candidate vs exact top-k"),
            Check("modelChanged", None, None, Outcome.NOT_APPLICABLE, "same model"),
        ],
        query_set="seeded sample of 200 source rows",
        search_params={"metric_type": "IP", "limit": 10},
        recall_curve={"candidate": [0.9, 0.95, 0.97]},
        latencies_ms={"candidate": [5.0, 6.0, 7.5, 9.0], "live": [5.5, 6.5, 8.0]},
    )


def first_release_run(candidate: str = "docs_search_v1") -> ValidationRun:
    """No live collection and no plot data at all."""
    return ValidationRun(
        release="docs-search",
        version="v1",
        candidate=candidate,
        live=None,
        live_version=None,
        checks=[Check("rowCount", 100.0, 100.0, Outcome.PASSED, "rows match")],
        query_set="seeded sample of 50 source rows",
        search_params={},
    )


@cache
def failing_files() -> dict[str, bytes]:
    """The failing run's report, rendered once (tests only read it)."""
    return render_report(failing_run())


def html_of(run: ValidationRun) -> str:
    return render_report(run)["report.html"].decode("utf-8")


def md_of(run: ValidationRun) -> str:
    return render_report(run)["report.md"].decode("utf-8")


# --- files -----------------------------------------------------------------------


def test_full_run_gives_every_file() -> None:
    assert set(failing_files()) == TEXTS | PLOTS


def test_run_without_plot_data_gives_only_the_texts() -> None:
    files = render_report(first_release_run())
    assert set(files) == TEXTS
    assert "data:image/png" not in files["report.html"].decode()
    assert "![" not in files["report.md"].decode()


def test_each_plot_appears_only_with_its_data() -> None:
    run = first_release_run()
    run.latencies_ms = {"live": [3.0, 4.0]}
    run.cosines = np.array([np.nan, np.nan])  # nothing finite: no histogram
    assert set(render_report(run)) == TEXTS | {"latency.png"}


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_plots_are_real_pngs(name: str) -> None:
    png = failing_files()[name]
    assert png.startswith(PNG_MAGIC)
    image = imread(io.BytesIO(png), format="png")
    assert image.shape == PNG_SHAPE
    assert float(image[..., :3].std()) > 0.05  # something was drawn, not a blank canvas


def test_recall_plot_without_a_live_curve() -> None:
    png = render_report(passing_run())["recall.png"]
    assert imread(io.BytesIO(png), format="png").shape == PNG_SHAPE


def test_rendering_twice_gives_identical_bytes() -> None:
    assert render_report(failing_run()) == render_report(failing_run())


def test_pngs_carry_no_software_or_time_metadata() -> None:
    for name in PLOTS:
        png = failing_files()[name]
        assert b"matplotlib" not in png.lower()
        assert b"tIME" not in png


# --- HTML ------------------------------------------------------------------------


def test_html_has_outcome_gates_and_coloured_cells() -> None:
    page = failing_files()["report.html"].decode()
    assert "<div class='verdict o-failed'>Failed</div>" in page
    for gate in ("rowCount", "cosineDrift", "recall@10", "latencyP99", "ndcg@10"):
        assert f"<td>{gate}</td>" in page
    assert "<td class='outcome o-failed'>Failed</td>" in page
    assert "<td class='outcome o-inconclusive'>Inconclusive</td>" in page
    assert ".verdict.o-failed{background:#cf222e}" in page


def test_html_outcome_of_a_passing_run() -> None:
    page = html_of(passing_run())
    assert "<div class='verdict o-passed'>Passed</div>" in page
    assert "<td class='outcome o-not-applicable'>NotApplicable</td>" in page


def test_html_title_and_facts() -> None:
    page = failing_files()["report.html"].decode()
    assert "<h1>Validation report: docs-search v7</h1>" in page
    assert "<td>docs_search_v7</td>" in page
    assert "<td>docs_search_v6 (version v6)</td>" in page
    assert "<td>queries/docs.parquet (500 queries)</td>" in page
    assert html.escape('metric_type=COSINE, limit=10, params={"ef": 64}') in page


def test_html_shows_values_thresholds_and_metrics() -> None:
    page = failing_files()["report.html"].decode()
    row = "<td class='num'>0.8123</td><td>≥ 0.9</td>"
    assert row in page
    assert "<td class='num'>48.12</td><td>≤ 40</td>" in page
    assert "<td class='num'>—</td><td>—</td>" in page  # ndcg@10: no value, no threshold
    assert "<strong>cosineDrift</strong>: mean=0.9612, share_below=0.1, n=200</li>" in page
    assert "<strong>latencyP99</strong>: p50=12.35, p99=48.12</li>" in page


def test_html_embeds_each_plot_as_a_data_uri() -> None:
    files = failing_files()
    page = files["report.html"].decode()
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert sorted(base64.b64decode(uri) for uri in uris) == sorted(files[n] for n in PLOTS)


def test_html_is_self_contained() -> None:
    page = failing_files()["report.html"].decode()
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    assert re.findall(r"src='([a-z]+):", page) == ["data"] * 3
    assert "Content-Security-Policy" in page


def test_hostile_names_are_escaped_in_html() -> None:
    run = first_release_run(candidate=HOSTILE)
    run.checks = [Check("<img src=x onerror=alert(1)>", 1.0, 1.0, Outcome.PASSED, "<b>")]
    page = html_of(run)
    assert "<script>" not in page
    assert "<img src=x" not in page
    assert "<b>" not in page
    assert html.escape(HOSTILE) in page
    assert html.escape("<img src=x onerror=alert(1)>") in page


def test_no_live_collection_shown_as_dash() -> None:
    page = html_of(first_release_run())
    assert "<th>Live collection</th><td>— (no live collection)</td>" in page
    assert "<th>Search params</th><td>—</td>" in page


# --- Markdown --------------------------------------------------------------------


def test_markdown_has_title_outcome_and_table_rows() -> None:
    md = failing_files()["report.md"].decode()
    assert md.startswith("# Validation report: docs-search v7\n")
    assert "\n## Outcome: FAILED\n" in md
    rows = [
        "| Gate | Value | Requirement | Outcome | Detail |",
        "| rowCount | 20,000 | ≥ 20,000 | Passed | collection rows vs source rows |",
        "| cosineDrift | 0.8123 | ≥ 0.9 | Failed | p5 of per-id cosine below threshold |",
        "| recall@10 | 0.9532 | ≥ 0.9 | Passed | candidate vs exact top-k |",
        "| latencyP99 | 48.12 | ≤ 40 | Failed | p99 search latency (ms) |",
        "| ndcg@10 | — | — | Inconclusive | no relevance labels |",
        "| Live collection | docs_search_v6 (version v6) |",
    ]
    for row in rows:
        assert row + "\n" in md


def test_markdown_lists_gate_metrics_and_links_plots() -> None:
    md = failing_files()["report.md"].decode()
    assert "- **recall@10**: rbo=0.8765, overlap=0.9\n" in md
    assert "rowCount**:" not in md  # no metrics, no line
    for name in sorted(PLOTS):
        assert f"]({name})\n" in md


def test_markdown_neutralises_hostile_text() -> None:
    run = first_release_run(candidate="a|b <script>")
    md = md_of(run)
    assert "| Candidate collection | a\\|b \\<script\\> |" in md
    assert "<script>" not in md


# --- formatting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (0.123456, "0.1235"),
        (12.3456, "12.35"),
        (0.000123456, "0.0001235"),
        (2.0, "2"),
        (20000.0, "20,000"),
        (1234567.0, "1,234,567"),
        (200_000, "200,000"),
        (199_998.0, "199,998"),  # an off-by-two count never prints like the count
        (12345.6, "12,346"),
        (1e20, "1e+20"),  # beyond 2**53 a float holds no exact digits to show
        (10**20, "100,000,000,000,000,000,000"),  # an int does
        (float("nan"), "NaN"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
    ],
)
def test_format_value(value: float | None, text: str) -> None:
    assert format_value(value) == text


def test_identical_values_still_plot() -> None:
    """Every id unchanged gives cosine exactly 1.0 everywhere: one value, still a histogram."""
    import numpy as np

    from controller.validation.report import render_report
    from controller.validation.results import ValidationRun

    run = ValidationRun("t/p", "v2", "p__v2", "p__v1", "v1", [], "q", {})
    run.cosines = np.ones(500)
    run.latencies_ms = {"candidate": [1.0] * 10, "live": [1.0] * 10}
    files = render_report(run)
    assert files["cosine.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert files["latency.png"][:8] == b"\x89PNG\r\n\x1a\n"
