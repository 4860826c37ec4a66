"""Controller configuration: file (config.example.yaml documents every option) + environment.

Credentials come only from the environment (or, in the Kubernetes driver, the Secret
named in spec.milvus.secretRef), never from a release spec or this file, and are never
logged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from controller.errors import ConfigError
from controller.yaml_input import EXCERPT, YamlInputError, load_yaml

ENV_TOKEN = "EMBREL_MILVUS_TOKEN"
ENV_USER = "EMBREL_MILVUS_USER"
ENV_PASSWORD = "EMBREL_MILVUS_PASSWORD"
ENV_CONFIG = "EMBREL_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ImportStagingOptions(_Section):
    """Where bulk imports (source.files.load) stage their Parquet files for Milvus."""

    # Written by the controller: a folder Milvus can read too.
    path: Path
    # The same folder as Milvus names it in an import request; None: ``path`` made
    # absolute (a server on the controller's disk, e.g. standalone with local storage).
    remote_prefix: str | None = None
    # Rows per staged file; Milvus runs one import job per file.
    rows_per_file: Annotated[int, Field(ge=1)] = 250_000

    def remote(self) -> str:
        return self.remote_prefix or str(self.path.resolve())


class MilvusOptions(_Section):
    # Connecting (the channel must be ready within it).
    timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Each call; index builds and loads are waited for with build.*TimeoutSeconds.
    call_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    retry_attempts: Annotated[int, Field(ge=1, le=50)] = 5
    retry_max_wait_seconds: Annotated[float, Field(gt=0)] = 30.0
    # None: no bulk import (source.files.load auto inserts, bulkImport is refused).
    import_staging: ImportStagingOptions | None = None


class BuildOptions(_Section):
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    index_timeout_seconds: Annotated[float, Field(gt=0)] = 3600.0
    load_timeout_seconds: Annotated[float, Field(gt=0)] = 600.0
    import_timeout_seconds: Annotated[float, Field(gt=0)] = 3600.0


class EmbeddingCacheOptions(_Section):
    enabled: bool = True
    # None: <stateDir>/embedding-cache.sqlite
    path: Path | None = None
    max_bytes: Annotated[int, Field(ge=1_000_000)] = 2_000_000_000


class ReconcileOptions(_Section):
    max_attempts: Annotated[int, Field(ge=1)] = 5
    watch_interval_seconds: Annotated[float, Field(gt=0)] = 2.0
    resync_seconds: Annotated[float, Field(gt=0)] = 300.0


class LogOptions(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    format: Literal["text", "json"] = "text"


class ControllerConfig(_Section):
    state_dir: Path = Path(".embrel")
    milvus: MilvusOptions = MilvusOptions()
    build: BuildOptions = BuildOptions()
    embedding_cache: EmbeddingCacheOptions = EmbeddingCacheOptions()
    reconcile: ReconcileOptions = ReconcileOptions()
    log: LogOptions = LogOptions()


def load_config(path: Path | None) -> ControllerConfig:
    """Read the config file (``--config`` or $EMBREL_CONFIG); defaults when there is none."""
    path = path or (Path(os.environ[ENV_CONFIG]) if ENV_CONFIG in os.environ else None)
    if path is None:
        return ControllerConfig()
    try:
        data = load_yaml(path.read_bytes()) or {}
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read config file: {exc.strerror}")]) from None
    except YamlInputError as exc:
        raise ConfigError(str(path), [("", str(exc))]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), [("", "expected a YAML mapping of config sections")])
    try:
        return ControllerConfig.model_validate(data)
    except ValidationError as exc:
        problems = [(".".join(str(p)[:EXCERPT] for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise ConfigError(str(path), problems) from None


@dataclass(frozen=True)
class RetryPolicy:
    """How the Milvus gateway retries a call that Milvus could not answer."""

    attempts: int = 5
    max_wait: float = 30.0
    timeout: float = 60.0  # connecting
    call_timeout: float = 60.0  # each call's deadline


@dataclass(frozen=True)
class Credentials:
    """Milvus credentials (environment or Secret); kept out of repr so that a credential
    never reaches a log line by accident."""

    token: str = ""
    user: str = ""
    password: str = ""

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"

    def values(self) -> list[str]:
        """The secret strings, for redaction."""
        return [v for v in (self.token, self.password) if v]


def credentials_from_env() -> Credentials:
    """Credentials from the environment; empty strings when unset."""
    return Credentials(
        os.environ.get(ENV_TOKEN, ""),
        os.environ.get(ENV_USER, ""),
        os.environ.get(ENV_PASSWORD, ""),
    )
