"""Secrets that webhook gates, notifications and Prometheus queries name by
``secretEnv`` (the controller's environment) or ``secretRef`` (a Kubernetes Secret, key
``secret``): how a driver hands them over, and the error when one is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from controller.spec import AnalysisSpec, NotificationSpec, WebhookSpec

# A part of a spec that may name a secret (and has a name for messages).
SecretHolder = WebhookSpec | NotificationSpec | AnalysisSpec
# The secret a holder names, for a release in a namespace; None when it names none.
SecretSource = Callable[[SecretHolder, str], str | None]


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
