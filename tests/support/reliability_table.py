"""Render the fault results (JSON Lines written by tests/integration/test_network_faults.py
and test_milvus_restart.py) as the Markdown tables of docs/reliability.md.

    python -m tests.support.reliability_table [RESULTS] [--write docs/reliability.md]

Without ``--write`` the tables are printed; with it, each replaces what lies between its
markers (``<!-- table -->`` for the network faults, ``<!-- restart-table -->`` for the
restarts). The last row of a (step, fault) wins, so a rerun of some cases updates only
theirs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("EMBREL_RELIABILITY_RESULTS", REPO / ".reliability.jsonl"))
# Each step of a release, by the first Milvus call it makes (as the gateway's observer
# names it), and the faults the proxy injects.
STEPS = {
    "insert": "insert",
    "index": "create_index",
    "load": "load_collection",
    "validate": "search",
    "flip": "create_alias",
    "drift reference": "query_iterator",  # with monitoring: sampled after the flip
}
FAULTS = ("latency", "reset", "stall", "black_hole")
# The steps a Milvus restart interrupts (tests/integration/test_milvus_restart.py).
RESTART_STEPS = (
    "insert",
    "index build",
    "load",
    "validation",
    "flip, before its proof",
    "drift measurement",
    "drain",
    "retention drop",
)
MARKERS = {
    "network": ("<!-- table -->", "<!-- /table -->"),
    "restart": ("<!-- restart-table -->", "<!-- /restart-table -->"),
}
HEADER = (
    "| step | fault | outcome | rows (count(*) / distinct ids) | failed attempts (kind) "
    "| recovery s | longest call s | release s | a pass retried with |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _row(r: dict[str, Any]) -> str:
    kinds = ", ".join(r["error_kinds"]) or "none"
    failed = f"{r['failed_calls']} ({kinds})" if "failed_calls" in r else kinds
    # The status message of a pass that ended in an error, without the retry notice.
    retried = r["retry_message"].strip(" !").partition("; retry")[0] or "-"
    recovery = "-" if r["recovery_seconds"] is None else f"{r['recovery_seconds']:.2f}"
    outcome = r["phase"] if r["phase"] == "Live" else f"{r['phase']}, alias {r['alias']}"
    if r.get("warning"):
        outcome += f" ({r['warning']})"
    return (
        f"| {r['step']} | {r['fault']} | {outcome} | {r['count']} / {r['distinct_ids']} "
        f"| {failed} | {recovery} "
        f"| {r['longest_call_seconds']:.2f} | {r['seconds']:.1f} | {retried} |"
    )


RESTART_HEADER = (
    "| step | outcome | rows (count(*) / distinct ids) | collections left | down s "
    "| failed attempts while down | recovery s | release s | status while down |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _restart_row(r: dict[str, Any]) -> str:
    recovery = "-" if r["recovery_seconds"] is None else f"{r['recovery_seconds']:.2f}"
    outcome = r["phase"] if r["phase"] == "Live" else f"{r['phase']}, alias {r['alias']}"
    # The alias names are random per case: show the version part only.
    left = ", ".join(name.partition("__")[2] for name in r["collections"]) or "none"
    waiting = r["waiting_message"].partition(": ")
    shown = f"{waiting[0].rsplit(' ', 1)[0]} ...: {waiting[2][:70]}" if waiting[2] else "-"
    return (
        f"| {r['step']} | {outcome} | {r['count']} / {r['distinct_ids']} | {left} "
        f"| {r['down_seconds']:.1f} | {r['failed_calls']} | {recovery} | {r['seconds']:.1f} "
        f"| {shown} |"
    )


def _latest(results: Path) -> dict[tuple[str, str], dict[str, Any]]:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for line in results.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            latest[(r["step"], r["fault"])] = r
    return latest


def tables(results: Path) -> dict[str, str]:
    latest = _latest(results)
    network = [(s, f) for s in STEPS for f in FAULTS]
    restarts = [(s, "restart") for s in RESTART_STEPS]
    return {
        "network": "\n".join([HEADER, *(_row(latest[k]) for k in network if k in latest)]),
        "restart": "\n".join(
            [RESTART_HEADER, *(_restart_row(latest[k]) for k in restarts if k in latest)]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--write", type=Path, help="the Markdown file to update in place")
    args = parser.parse_args()
    rendered = tables(args.results)
    if args.write is None:
        print("\n\n".join(rendered.values()))
        return
    doc = args.write.read_text()
    for kind, (start, end) in MARKERS.items():
        head, _, rest = doc.partition(start)
        _, _, tail = rest.partition(end)
        doc = f"{head}{start}\n{rendered[kind]}\n{end}{tail}"
    args.write.write_text(doc)


if __name__ == "__main__":
    main()
