"""Instant queries to Prometheus for ``spec.analysis`` (``MetricQueryPort``, httpx).

``GET {address}/api/v1/query?query=...``: a scalar, or a vector of exactly one
series, is the number; anything else (an error answer, no series, several series,
no answer) is ``QueryFailed`` with the reason, which the analysis counts as an
Error measurement. No retries here: the analysis' ``consecutiveErrorLimit`` is the
retry budget, as in Argo Rollouts. The address is shown with credentials redacted;
a secret named by ``analysis.secretEnv``/``secretRef`` is sent as a bearer token and
never shown.
"""

from __future__ import annotations

from typing import Any

import httpx

from controller.analysis import QueryFailed
from controller.secrets import MissingSecret, SecretSource, env_secrets
from controller.spec import AnalysisSpec, redact_uri, uri_secret_values

_EXCERPT = 200


class PrometheusQuery:
    """``MetricQueryPort`` over Prometheus' HTTP API."""

    def __init__(
        self, secrets: SecretSource | None = None, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._secrets = secrets or env_secrets()
        self._client = httpx.Client(transport=transport, follow_redirects=False)

    def query(self, analysis: AnalysisSpec, namespace: str, promql: str) -> float:
        """The query's one number; QueryFailed saying why there is none."""
        address, timeout = analysis.address, analysis.timeout_seconds
        where = redact_uri(address)
        try:
            token = self._secrets(analysis, namespace)
        except MissingSecret as exc:
            raise QueryFailed(f"Prometheus {where}: {exc}") from None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = self._client.get(
                f"{address}/api/v1/query",
                params={"query": promql},
                headers=headers,
                timeout=timeout,
            )
        except httpx.TimeoutException:
            raise QueryFailed(f"Prometheus {where} did not answer within {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise QueryFailed(
                f"Prometheus {where}: {type(exc).__name__}: {_scrub(str(exc), address)}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            said = body.get("error", "") if isinstance(body, dict) else response.text
            said = _scrub(str(said), address)[:_EXCERPT]
            raise QueryFailed(f"Prometheus {where} answered HTTP {response.status_code}: {said}")
        return _number(body.get("data"))

    def close(self) -> None:
        self._client.close()


def _scrub(text: str, address: str) -> str:
    """``text`` without the address' credentials, however it quotes them."""
    text = text.replace(address, redact_uri(address))
    for secret in uri_secret_values(address):
        text = text.replace(secret, "***")
    return text


def _number(data: Any) -> float:
    """The value of a scalar, or of a vector holding exactly one sample."""
    if not isinstance(data, dict):
        raise QueryFailed("Prometheus answered without data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return _float(result[1])
    if kind == "vector" and isinstance(result, list):
        if len(result) != 1:
            raise QueryFailed(
                "the query returned no series"
                if not result
                else f"the query returned {len(result)} series; aggregate it to one (sum, max, ...)"
            )
        value = result[0].get("value") if isinstance(result[0], dict) else None
        if isinstance(value, list) and len(value) == 2:
            return _float(value[1])
    raise QueryFailed(f"the query returned a {kind}, not a scalar or one series")


def _float(text: Any) -> float:
    """Prometheus sends numbers as text; NaN stays NaN (no condition holds for it)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        raise QueryFailed(f"the query returned {str(text)[:40]!r}, not a number") from None
