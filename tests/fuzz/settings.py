"""Hypothesis settings shared by the fuzz properties.

The default run is small enough for every `pytest tests/unit tests/fuzz`; a long run
sets FUZZ_EXAMPLES (e.g. FUZZ_EXAMPLES=5000) for that many inputs per property.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from hypothesis import HealthCheck, settings

from controller.errors import EmbrelError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
# Per input: a clear error or a result within this time, whatever the input.
DEADLINE = timedelta(seconds=2)

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=DEADLINE,
    database=None,  # no .hypothesis folder in the worktree; failures print their input
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # tmp_path is reused: each input cleans up
    ],
)

T = TypeVar("T")


def clear_error_or_result(call: Callable[[], T]) -> T | EmbrelError:
    """Run ``call``: its result, or the EmbrelError it raised; any other exception is a
    finding and propagates, so Hypothesis reports and shrinks the input."""
    try:
        return call()
    except EmbrelError as exc:
        assert str(exc).strip(), "an error must say what is wrong"
        return exc
