"""Render the network-fault results (JSON Lines written by
tests/integration/test_network_faults.py) as the Markdown table of docs/reliability.md.

    python -m tests.support.reliability_table [RESULTS] [--write docs/reliability.md]

Without ``--write`` the table is printed; with it, the table replaces what lies between
the ``<!-- table -->`` and ``<!-- /table -->`` markers. The last row of a (step, fault)
wins, so a rerun of some cases updates only theirs.
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
START, END = "<!-- table -->", "<!-- /table -->"
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


def table(results: Path) -> str:
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for line in results.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            latest[(r["step"], r["fault"])] = r
    order = [(s, f) for s in STEPS for f in FAULTS]
    rows = [_row(latest[key]) for key in order if key in latest]
    return "\n".join([HEADER, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--write", type=Path, help="the Markdown file to update in place")
    args = parser.parse_args()
    rendered = table(args.results)
    if args.write is None:
        print(rendered)
        return
    doc = args.write.read_text()
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    args.write.write_text(f"{head}{START}\n{rendered}\n{END}{tail}")


if __name__ == "__main__":
    main()
