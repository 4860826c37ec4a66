"""controller.drivers.wiring: what both drivers build engines from, and failed passes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controller.config import ControllerConfig, Credentials, RetryPolicy
from controller.drivers import wiring
from controller.drivers.kube import SecretInvalid, SecretUnavailable
from controller.drivers.local import LocalController
from controller.errors import (
    BuildIncomplete,
    ConflictError,
    EmbrelError,
    KubeConflict,
    MilvusRejected,
    MilvusUnavailable,
    SourceError,
    WaitTimedOut,
)
from controller.metrics import PrometheusTelemetry
from controller.ports import NullTelemetry, Telemetry
from controller.spec import EmbedderSpec, MilvusRef, parse_release
from controller.status import Phase, Reason, ReleaseStatus, with_phase

NOW = "2030-01-01T00:00:00Z"
LATER = "2030-01-01T00:09:00Z"


class Recorder:
    """Stands in for ``wiring.connect_milvus``: remembers every connection it made."""

    def __init__(self) -> None:
        self.made: list[FakeGateway] = []

    def __call__(
        self,
        uri: str,
        db: str,
        credentials: Credentials,
        policy: RetryPolicy,
        observer: wiring.MilvusObserver | None = None,
    ) -> FakeGateway:
        gateway = FakeGateway(uri, db, credentials, observer)
        self.made.append(gateway)
        return gateway


class FakeGateway:
    def __init__(
        self, uri: str, db: str, credentials: Credentials, observer: wiring.MilvusObserver | None
    ) -> None:
        self.uri, self.db, self.credentials, self.observer = uri, db, credentials, observer
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(wiring, "connect_milvus", recorder)
    return recorder


@pytest.fixture
def config(tmp_path: Path) -> ControllerConfig:
    return ControllerConfig(state_dir=tmp_path / "state")


# -- failed passes ---------------------------------------------------------------------


def previous() -> ReleaseStatus:
    return with_phase(ReleaseStatus(), Phase.BUILDING, Reason.BUILDING, "building", NOW)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (MilvusUnavailable("no route", delay=7.0), Reason.MILVUS_UNAVAILABLE),
        (BuildIncomplete("rows differ"), Reason.BUILD_INCOMPLETE),
        (WaitTimedOut("index"), Reason.WAIT_TIMED_OUT),
        (KubeConflict("409"), Reason.RETRYING),
        (SecretUnavailable("test/absent not found", delay=30.0), Reason.SECRET_UNAVAILABLE),
    ],
)
def test_a_temporary_error_keeps_the_phase_and_asks_for_a_retry(
    exc: EmbrelError, reason: Reason
) -> None:
    result = wiring.failed_pass(previous(), exc, 3, NOW)
    assert result.status.phase == Phase.BUILDING
    assert result.status.message.endswith(str(exc))
    assert result.status.observed_generation == 3
    assert {c.reason for c in result.status.conditions} == {reason}
    assert not result.done and result.error is exc
    assert result.requeue_after == exc.delay  # type: ignore[attr-defined]


def test_while_milvus_is_down_the_status_says_since_when() -> None:
    first = wiring.failed_pass(previous(), MilvusUnavailable("refused"), 3, NOW).status
    assert first.message == f"waiting for Milvus since {NOW}: refused"
    later = wiring.failed_pass(first, MilvusUnavailable("timed out"), 3, LATER).status
    assert later.message == f"waiting for Milvus since {NOW}: timed out"
    assert later.unavailable_since == NOW
    assert ReleaseStatus.from_dict(later.to_dict()).unavailable_since == NOW
    other = wiring.failed_pass(later, BuildIncomplete("rows differ"), 3, NOW).status
    assert other.unavailable_since is None and other.message == "rows differ"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (MilvusRejected("auth"), Reason.MILVUS_REJECTED),
        (SourceError("missing"), Reason.INVALID_SOURCE),
        (ConflictError("reused"), Reason.VERSION_CONFLICT),
        (SecretInvalid("no token key"), Reason.SECRET_UNAVAILABLE),
    ],
)
def test_a_permanent_error_fails_the_release(exc: EmbrelError, reason: Reason) -> None:
    result = wiring.failed_pass(previous(), exc, 3, NOW)
    assert result.status.phase == Phase.FAILED
    assert result.status.observed_generation == 3
    stalled = result.status.condition("Stalled")
    assert stalled is not None and stalled.status == "True" and stalled.reason == reason
    assert result.done and result.error is exc and result.requeue_after is None


# -- the engine factory ----------------------------------------------------------------


def test_one_gateway_per_uri_db_and_credentials_closed_on_close(
    connections: Recorder, config: ControllerConfig, tmp_path: Path
) -> None:
    telemetry = PrometheusTelemetry(CollectorRegistry())
    factory = wiring.EngineFactory(config, telemetry)
    lite, other_db = MilvusRef(uri="data/milvus.db"), MilvusRef(uri="data/milvus.db", db="x")
    token = Credentials(token="t0ken-value")
    first = factory.gateway(lite, tmp_path, Credentials())
    assert factory.gateway(lite, tmp_path, Credentials()) is first
    assert factory.gateway(other_db, tmp_path, Credentials()) is not first
    assert factory.gateway(lite, tmp_path, token) is not first
    assert len(connections.made) == 3
    assert first.uri == str((tmp_path / "data" / "milvus.db").resolve())  # type: ignore[attr-defined]
    assert (tmp_path / "data").is_dir()  # Milvus Lite needs the folder
    assert first.observer == telemetry.milvus_call  # type: ignore[attr-defined]
    factory.close()
    assert all(g.closed for g in connections.made)
    assert factory.gateway(lite, tmp_path, Credentials()) is not first  # connects again


def test_threads_share_one_connection(
    connections: Recorder, config: ControllerConfig, tmp_path: Path
) -> None:
    factory = wiring.EngineFactory(config)
    ref, got = MilvusRef(uri="milvus.db"), []
    threads = [
        threading.Thread(target=lambda: got.append(factory.gateway(ref, tmp_path, Credentials())))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(connections.made) == 1 and all(g is got[0] for g in got)


def test_one_model_per_embedder_spec_across_threads(
    monkeypatch: pytest.MonkeyPatch, config: ControllerConfig, tmp_path: Path
) -> None:
    made: list[EmbedderSpec] = []

    class Model:
        def __init__(self, spec: EmbedderSpec, base_dir: Path | None) -> None:
            made.append(spec)

    monkeypatch.setattr(wiring, "make_encoder", Model)
    factory = wiring.EngineFactory(config)
    small, other = EmbedderSpec(), EmbedderSpec(model="other")
    got: list[Any] = []
    threads = [
        threading.Thread(target=lambda: got.append(factory.embedder_factory(tmp_path)(small)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and all(m is got[0] for m in got)
    assert factory.embedder_factory(tmp_path)(other) is not got[0]
    assert len(made) == 2


def test_an_injected_embedder_factory_is_used_as_it_is(config: ControllerConfig) -> None:
    def embedders(spec: EmbedderSpec) -> Any:
        raise AssertionError("not called here")

    assert wiring.EngineFactory(config, embedders=embedders).embedder_factory(Path()) is embedders


def test_the_embedding_cache_opens_on_first_use_and_closes_on_close(
    monkeypatch: pytest.MonkeyPatch, config: ControllerConfig
) -> None:
    class Cache:
        closed = False

        def close(self) -> None:
            self.closed = True

    opened: list[Cache] = []

    def open_cache(cfg: ControllerConfig) -> Cache:
        opened.append(Cache())
        return opened[-1]

    monkeypatch.setattr(wiring, "open_embedding_cache", open_cache)
    factory = wiring.EngineFactory(config)
    assert opened == []
    first = factory.embedding_cache()
    assert factory.embedding_cache() is first
    assert len(opened) == 1 and first is opened[0]  # type: ignore[comparison-overlap]
    factory.close()
    assert opened[0].closed


def test_a_disabled_embedding_cache_is_none(tmp_path: Path) -> None:
    config = ControllerConfig.model_validate(
        {"stateDir": str(tmp_path), "embeddingCache": {"enabled": False}}
    )
    assert wiring.EngineFactory(config).embedding_cache() is None


def test_engines_get_the_factorys_parts(
    connections: Recorder, config: ControllerConfig, tmp_path: Path
) -> None:
    telemetry = PrometheusTelemetry(CollectorRegistry())
    factory = wiring.EngineFactory(config, telemetry)
    milvus = factory.gateway(MilvusRef(uri="milvus.db"), tmp_path, Credentials())
    statuses: list[ReleaseStatus] = []
    engine = factory.engine(milvus, tmp_path, Quiet(), statuses.append)
    parts = engine.context
    assert parts.milvus is milvus and parts.telemetry is telemetry
    assert parts.settings == wiring.engine_settings(config)
    assert parts.reports is factory.reports and parts.references is factory.references
    assert engine.on_status == statuses.append
    assert factory.reports.root == config.state_dir / "reports"
    assert factory.references.root == config.state_dir / "references"


# -- the local driver on the factory ---------------------------------------------------


class Quiet:
    def __init__(self) -> None:
        self.events: list[str] = []

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(reason)

    def progress(self, stage: str, total: int | None) -> Any:
        raise AssertionError("not used here")


RELEASE = """
apiVersion: embrel.dev/v1alpha1
kind: EmbeddingRelease
metadata: {name: products, namespace: search}
spec:
  alias: products
  version: v1
  model: {name: m}
  milvus: {uri: milvus.db, secretRef: auth}
  collection: {dimension: 8}
  source: {files: {uri: data.parquet}}
"""


def test_the_local_driver_connects_through_the_factory(
    connections: Recorder,
    config: ControllerConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMBREL_MILVUS_TOKEN", "env-t0ken")
    reporter = Quiet()
    controller = LocalController(config, reporter)
    release = parse_release(RELEASE)
    engine = controller.engine(release, tmp_path)
    assert controller.engine(release, tmp_path).milvus is engine.milvus
    assert connections.made[0].credentials == Credentials(token="env-t0ken")
    # The Secret is the Kubernetes driver's: said once, not on every pass.
    assert reporter.events == ["CredentialsFromEnvironment"]
    assert isinstance(controller.telemetry, NullTelemetry)
    controller.close()
    assert connections.made[0].closed


# -- the telemetry protocol ------------------------------------------------------------


def _members(protocol: type) -> set[str]:
    return {n for n in vars(protocol) if not n.startswith("_")}


@pytest.mark.parametrize("implementation", [NullTelemetry, PrometheusTelemetry])
def test_every_telemetry_implements_the_whole_port(implementation: type) -> None:
    members = _members(Telemetry)
    assert {"milvus_call", "observe_status", "reconcile_error", "forget"} <= members
    assert members <= {n for n in dir(implementation) if callable(getattr(implementation, n))}


def test_the_factory_drops_numbers_when_no_telemetry_is_given(config: ControllerConfig) -> None:
    assert isinstance(wiring.EngineFactory(config).telemetry, NullTelemetry)
