"""The Argo CD health check (manifests/argocd/health.lua), run in Lua 5.1 as Argo CD does.

Argo CD runs health checks in gopher-lua (Lua 5.1) with the object as the global
``obj``; lupa embeds the reference Lua 5.1 here.
"""

from pathlib import Path
from typing import Any

import lupa.lua51 as lua51
import pytest
import yaml

from controller.status import Phase, ReleaseStatus, with_phase
from tests.support.manifests import MANIFESTS, release_problems

ARGOCD = MANIFESTS / "argocd"
CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]


def health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script or (ARGOCD / "health.lua").read_text())
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_argo_test_cases(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert health(obj) == case["healthStatus"]


def test_every_testdata_file_has_a_case_and_is_a_valid_release() -> None:
    files = {p.name for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert files == {Path(c["inputPath"]).name for c in CASES}
    for name in sorted(files):
        obj = yaml.safe_load((ARGOCD / "testdata" / name).read_text())
        assert release_problems(obj, name) == []


EXPECTED = {
    Phase.LIVE: "Healthy",
    Phase.FAILED: "Degraded",
    Phase.ROLLED_BACK: "Degraded",
    Phase.DEGRADED: "Degraded",
    Phase.AWAITING_PROMOTION: "Suspended",
    Phase.SUSPENDED: "Suspended",
}


@pytest.mark.parametrize("phase", list(Phase))
def test_every_phase_as_the_engine_writes_it(phase: Phase) -> None:
    """Status from controller.status itself, so the check follows its conditions."""
    status = with_phase(ReleaseStatus(observed_generation=2), phase, "R", f"in {phase}", "t")
    obj = {"metadata": {"name": "p", "generation": 2}, "status": status.to_dict()}
    assert health(obj) == {"status": EXPECTED.get(phase, "Progressing"), "message": f"in {phase}"}
    obj["metadata"]["generation"] = 3  # a new spec the controller has not seen yet
    assert health(obj)["status"] == "Progressing"


def test_a_broken_health_check_fails_the_cases() -> None:
    broken = (ARGOCD / "health.lua").read_text().replace('"AwaitingPromotion"', '"Awaiting"')
    obj = yaml.safe_load((ARGOCD / "testdata/suspended_awaiting_promotion.yaml").read_text())
    assert health(obj, broken)["status"] == "Progressing"
