"""Secrets that webhook gates, notifications and Prometheus queries name by
``secretEnv`` (the controller's environment) or ``secretRef`` (a Kubernetes Secret, key
``secret``): how a driver hands them over, and the error when one is missing. Also the
object storage settings of ``spec.storage.secretRef`` (a Secret's keys over the
environment).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from controller.sources.location import STORAGE_SETTINGS, StorageSettings
from controller.spec import AnalysisSpec, EmbeddingRelease, NotificationSpec, WebhookSpec

# A part of a spec that may name a secret (and has a name for messages).
SecretHolder = WebhookSpec | NotificationSpec | AnalysisSpec
# The secret a holder names, for a release in a namespace; None when it names none.
SecretSource = Callable[[SecretHolder, str], str | None]
# Every key of a Kubernetes Secret: (namespace, name, the spec field naming it) -> keys.
SecretReader = Callable[[str, str, str], Mapping[str, str]]


class MissingSecret(Exception):
    """The spec names a secret that is not there: nothing is sent without it."""


def env_secrets(environ: Mapping[str, str] | None = None) -> SecretSource:
    """Secrets from the controller's environment (``secretEnv``); the local driver's.

    ``secretRef`` is a Kubernetes Secret: the local driver cannot read it and refuses
    to send without it.
    """

    def secret(holder: SecretHolder, namespace: str) -> str | None:
        env = os.environ if environ is None else environ
        if holder.secret_ref is not None:
            raise MissingSecret(
                f"secretRef {holder.secret_ref!r} is read by the Kubernetes driver only; "
                "use secretEnv with the local driver"
            )
        if holder.secret_env is None:
            return None
        value = env.get(holder.secret_env)
        if not value:
            raise MissingSecret(f"secretEnv {holder.secret_env} is not set")
        return value

    return secret


def storage_settings(release: EmbeddingRelease, read: SecretReader | None) -> StorageSettings:
    """How ``release`` reaches object storage: the keys of the Secret in
    ``spec.storage.secretRef`` (when ``read`` can read Secrets, the Kubernetes driver)
    over the controller's environment. Without ``read`` (the local driver), the
    environment only, as for ``spec.milvus.secretRef``."""
    ref = release.spec.storage.secret_ref if release.spec.storage is not None else None
    if ref is None or read is None:
        return StorageSettings()
    keys = read(release.metadata.namespace, ref, "spec.storage.secretRef")
    return StorageSettings(secret={k: v for k, v in keys.items() if k in STORAGE_SETTINGS})
