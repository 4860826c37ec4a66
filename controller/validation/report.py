"""The validation report: Markdown, one self-contained HTML page and PNG plots, in memory.

``render_report`` is pure apart from drawing with matplotlib's Agg renderer on private
``Figure`` objects (pyplot and the global backend are never touched), and it is
deterministic: the same ``ValidationRun`` always gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from controller.validation.results import Check, Outcome, ValidationRun, format_number

if TYPE_CHECKING:
    from matplotlib.axes import Axes

Floats = npt.NDArray[np.float64]

DASH = "—"
COSINE_LINE = 0.9  # the similarity below which an id counts as having moved
FIG_SIZE = (7.2, 4.0)  # inches; at DPI this is 720 x 400 pixels
DPI = 100
SERIES = ("candidate", "live")
SERIES_COLOURS = {"candidate": "#1f77b4", "live": "#ff7f0e"}
OUTCOME_COLOURS = {
    Outcome.PASSED: "#1a7f37",
    Outcome.FAILED: "#cf222e",
    Outcome.INCONCLUSIVE: "#9a6700",
    Outcome.NOT_APPLICABLE: "#6e7781",
    Outcome.REPORTED: "#0969da",
}
COMPARISONS = {">=": "≥", "<=": "≤"}
PLOT_TITLES = {
    "cosine.png": "Per-id cosine similarity, live vs candidate",
    "recall.png": "Recall@k, candidate and live",
    "latency.png": "Search latency, candidate and live",
}
MD_SPECIAL = "\\`*[]<>|"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_report(run: ValidationRun) -> dict[str, bytes]:
    """The report's files by name: report.md, report.html and each plot that has data."""
    plots = _plots(run)
    return {
        "report.md": _markdown(run, list(plots)).encode("utf-8"),
        "report.html": _html(run, plots).encode("utf-8"),
        **plots,
    }


# --- text ------------------------------------------------------------------------


def format_value(value: float | None) -> str:
    """Every number in the report: ``format_number``, the formatter the CLI uses too."""
    return format_number(value)


def _requirement(check: Check) -> str:
    if check.threshold is None:
        return DASH
    symbol = COMPARISONS.get(check.comparison, check.comparison)
    return f"{symbol} {format_value(check.threshold)}"


def _metrics_text(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={format_value(value)}" for name, value in metrics.items())


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return format_value(value)
    return json.dumps(value, sort_keys=True, default=str)


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={_param_text(v)}" for key, v in params.items()) or DASH


def _live_text(run: ValidationRun) -> str:
    if run.live is None:
        return f"{DASH} (no live collection)"
    return f"{run.live} (version {run.live_version or DASH})"


def _title(run: ValidationRun) -> str:
    return f"Validation report: {run.release} {run.version}"


def _facts(run: ValidationRun) -> list[tuple[str, str]]:
    return [
        ("Track", run.release),
        ("Version", run.version),
        ("Candidate collection", run.candidate),
        ("Live collection", _live_text(run)),
        ("Query set", run.query_set),
        ("Search params", _params_text(run.search_params)),
        (
            "Time per gate",
            ", ".join(f"{k} {format_number(v)}s" for k, v in run.seconds.items()) or DASH,
        ),
    ]


def _gate_cells(check: Check) -> list[str]:
    return [
        check.name,
        format_value(check.value),
        _requirement(check),
        check.outcome.value,
        check.detail or DASH,
    ]


# --- Markdown --------------------------------------------------------------------


def _md(text: str) -> str:
    """Text safe in a Markdown table cell: no raw HTML, no table breaks, no links."""
    flat = " ".join(text.split())
    return "".join(f"\\{ch}" if ch in MD_SPECIAL else ch for ch in flat)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md(cell) for cell in cells) + " |"


def _md_gates(checks: Sequence[Check]) -> list[str]:
    if not checks:
        return ["_No gates ran._"]
    header = ["| Gate | Value | Requirement | Outcome | Detail |", "|---|---:|---|---|---|"]
    return header + [_md_row(_gate_cells(check)) for check in checks]


def _md_metrics(checks: Sequence[Check]) -> list[str]:
    lines = [f"- **{_md(c.name)}**: {_md(_metrics_text(c.metrics))}" for c in checks if c.metrics]
    return ["", "### Gate metrics", "", *lines] if lines else []


def _md_plots(names: Sequence[str]) -> list[str]:
    lines = ["", "## Plots"] if names else []
    for name in names:
        lines += ["", f"![{PLOT_TITLES[name]}]({name})"]
    return lines


def _markdown(run: ValidationRun, plot_names: Sequence[str]) -> str:
    lines = [
        f"# {_md(_title(run))}",
        "",
        f"## Outcome: {run.outcome.value.upper()}",
        "",
        "| | |",
        "|---|---|",
        *(_md_row(fact) for fact in _facts(run)),
        "",
        "## Gates",
        "",
        *_md_gates(run.checks),
        *_md_metrics(run.checks),
        *_md_plots(plot_names),
    ]
    return "\n".join(lines) + "\n"


# --- HTML ------------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _outcome_class(outcome: Outcome) -> str:
    return "o-" + outcome.name.lower().replace("_", "-")


def _css() -> str:
    rules = [
        "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#1f2328}",
        "h1{font-size:1.5em;margin-bottom:.2em}",
        ".verdict{font-size:2.6em;font-weight:700;letter-spacing:.05em;color:#fff;"
        "display:inline-block;padding:.15em .6em;border-radius:.2em;margin:.3em 0}",
        "table{border-collapse:collapse;margin:.8em 0}",
        "th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:left;vertical-align:top}",
        "th{background:#f6f8fa}",
        "td.num{text-align:right;font-variant-numeric:tabular-nums}",
        "td.outcome{font-weight:700}",
        ".metrics{font-family:ui-monospace,monospace;font-size:.9em}",
        "figure{margin:1em 0}img{max-width:100%;height:auto}",
    ]
    for outcome, colour in OUTCOME_COLOURS.items():
        cls = _outcome_class(outcome)
        rules.append(f".verdict.{cls}{{background:{colour}}}td.{cls}{{color:{colour}}}")
    return "".join(rules)


def _html_facts(run: ValidationRun) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _facts(run))
    return f"<table class='facts'>{rows}</table>"


def _html_gate_row(check: Check) -> str:
    name, value, requirement, outcome, detail = (_esc(cell) for cell in _gate_cells(check))
    cls = _outcome_class(check.outcome)
    return (
        f"<tr><td>{name}</td><td class='num'>{value}</td><td>{requirement}</td>"
        f"<td class='outcome {cls}'>{outcome}</td><td>{detail}</td></tr>"
    )


def _html_gates(checks: Sequence[Check]) -> str:
    if not checks:
        return "<p><em>No gates ran.</em></p>"
    head = "<tr><th>Gate</th><th>Value</th><th>Requirement</th><th>Outcome</th><th>Detail</th></tr>"
    rows = "".join(_html_gate_row(check) for check in checks)
    return f"<table class='gates'>{head}{rows}</table>"


def _html_metrics(checks: Sequence[Check]) -> str:
    items = "".join(
        f"<li><strong>{_esc(c.name)}</strong>: {_esc(_metrics_text(c.metrics))}</li>"
        for c in checks
        if c.metrics
    )
    return f"<h3>Gate metrics</h3><ul class='metrics'>{items}</ul>" if items else ""


def _html_plot(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    title = _esc(PLOT_TITLES[name])
    return (
        f"<figure><img alt='{title}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{title} ({_esc(name)})</figcaption></figure>"
    )


def _html_plots(plots: Mapping[str, bytes]) -> str:
    figures = "".join(_html_plot(name, png) for name, png in plots.items())
    return f"<h2>Plots</h2>{figures}" if figures else ""


def _html(run: ValidationRun, plots: Mapping[str, bytes]) -> str:
    outcome = run.outcome
    parts = [
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<title>{_esc(_title(run))}</title><style>{_css()}</style></head><body>",
        f"<h1>{_esc(_title(run))}</h1>",
        f"<div class='verdict {_outcome_class(outcome)}'>{_esc(outcome.value)}</div>",
        _html_facts(run),
        "<h2>Gates</h2>",
        _html_gates(run.checks),
        _html_metrics(run.checks),
        _html_plots(plots),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


# --- plots -----------------------------------------------------------------------


def _finite(values: Any) -> Floats:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _series(data: Mapping[str, Sequence[float]]) -> dict[str, Floats]:
    """The candidate and live series that have samples, in that order."""
    arrays = {name: np.asarray(data.get(name, []), dtype=np.float64) for name in SERIES}
    return {name: array for name, array in arrays.items() if array.size}


def _latency_series(data: Mapping[str, Sequence[float]]) -> dict[str, Floats]:
    finite = {name: _finite(samples) for name, samples in _series(data).items()}
    return {name: samples for name, samples in finite.items() if samples.size}


def _png(draw: Callable[[Axes], None]) -> bytes:
    # matplotlib is imported only to draw: it costs ~0.4 s, and only a validation draws.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIG_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    draw(figure.add_subplot())
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _plots(run: ValidationRun) -> dict[str, bytes]:
    plots: dict[str, bytes] = {}
    cosines = _finite(run.cosines)
    if cosines.size:
        left_out = np.asarray(run.cosines).size - cosines.size
        plots["cosine.png"] = _png(lambda ax: _draw_cosine(ax, cosines, left_out))
    recall = _series(run.recall_curve)
    if recall:
        plots["recall.png"] = _png(lambda ax: _draw_recall(ax, recall))
    latency = _latency_series(run.latencies_ms)
    if latency:
        plots["latency.png"] = _png(lambda ax: _draw_latency(ax, latency))
    return plots


def _bins(values: Floats, count: int) -> list[float]:
    """Bin edges that also work when every value is (nearly) the same, e.g. cosine 1.0."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:
        low, high = low - 0.005, high + 0.005
    edges: list[float] = np.linspace(low, high, count + 1).tolist()
    return edges


def _draw_cosine(ax: Axes, cosines: Floats, left_out: int) -> None:
    mean = float(cosines.mean())
    ax.hist(cosines, bins=_bins(cosines, 50), color=SERIES_COLOURS["candidate"], alpha=0.8)
    ax.axvline(COSINE_LINE, color="#cf222e", linestyle="--", label=f"{COSINE_LINE}")
    ax.axvline(mean, color="black", linewidth=1.5, label=f"mean {format_value(mean)}")
    note = f", {left_out} NaN left out" if left_out else ""
    ax.set_title(f"{PLOT_TITLES['cosine.png']} (n={cosines.size}{note})")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("ids")
    ax.legend(loc="upper left")


def _draw_recall(ax: Axes, curves: Mapping[str, Floats]) -> None:
    for name, recall in curves.items():
        ks = np.arange(1, recall.size + 1)
        ax.plot(ks, recall, marker="o", color=SERIES_COLOURS[name], label=name)
    ax.set_title(PLOT_TITLES["recall.png"])
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0.0, 1.02)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")


def _draw_latency(ax: Axes, samples: Mapping[str, Floats]) -> None:
    edges = _bins(np.concatenate(list(samples.values())), 40)
    for name, values in samples.items():
        colour = SERIES_COLOURS[name]
        p50, p99 = (float(p) for p in np.percentile(values, [50, 99]))
        label = f"{name}: p50 {format_value(p50)}, p99 {format_value(p99)} ms (n={values.size})"
        ax.hist(values, bins=edges, color=colour, alpha=0.45, label=label)
        ax.axvline(p50, color=colour, linestyle="--")
        ax.axvline(p99, color=colour, linestyle=":")
    ax.set_title(f"{PLOT_TITLES['latency.png']} (dashed p50, dotted p99)")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("queries")
    ax.legend(loc="upper right")
