"""The Kubernetes gateway: the only module that imports the ``kubernetes`` client.

Everything the driver asks of the API server, as plain dicts (the objects' JSON,
camelCase), with ``ApiException`` and connection errors translated at the boundary
into ``controller.errors`` (the original stays as ``__cause__``):

    401, 403, 400, 422, other 4xx   -> KubeRejected   (a person must act: RBAC, CRD, input)
    404                             -> KubeNotFound
    409                             -> KubeConflict   (re-read the object, then retry)
    410                             -> KubeGone       (a watch expired: list again)
    429, 5xx, no connection         -> KubeUnavailable

Status is written only through the status subresource, as a PUT carrying the
``metadata.resourceVersion`` that was read (optimistic concurrency: a 409 means the
object changed and the caller must re-read it). Secret values are returned to the
caller and never logged or put into an error message.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from controller.config import Credentials
from controller.errors import (
    KubeConflict,
    KubeGone,
    KubeNotFound,
    KubeRejected,
    KubeUnavailable,
)

log = logging.getLogger(__name__)

GROUP = "embrel.dev"
VERSION = "v1alpha1"
PLURAL = "embeddingreleases"
KIND = "EmbeddingRelease"
API_VERSION = f"{GROUP}/{VERSION}"
MERGE_PATCH = "application/merge-patch+json"
# Where a pod finds its own namespace (the default for Leases).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Threads that talk to the API at once: workers, one watch per namespace, the elector.
CONNECTION_POOL = 32


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


def _body_message(exc: ApiException) -> str:
    import json

    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return str(exc.reason or "")
    return str(body.get("message") or exc.reason or "")


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn client exceptions into embrel errors that say what to do."""
    try:
        yield
    except ApiException as exc:
        code = exc.status or 0
        message = _body_message(exc)
        if code == 409:
            raise KubeConflict(f"{action}: {message} (409)") from exc
        if code == 410:
            raise KubeGone(f"{action}: {message} (410 Gone)") from exc
        if code == 404:
            raise KubeNotFound(f"{action}: not found ({message})") from exc
        if code == 401:
            raise KubeRejected(
                f"{action}: the API server refused our credentials (401); "
                "check the kubeconfig or the ServiceAccount token"
            ) from exc
        if code == 403:
            raise KubeRejected(
                f"{action}: forbidden (403: {message}); grant the controller's "
                "ServiceAccount this verb (see the Role/ClusterRole in manifests/)"
            ) from exc
        if code == 429 or code >= 500 or code == 0:
            raise KubeUnavailable(f"{action}: the API server answered {code} ({message})") from exc
        raise KubeRejected(f"{action}: the API server refused ({code}: {message})") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeUnavailable(f"{action}: cannot reach the Kubernetes API ({exc})") from exc


def load_api_client(kubeconfig: Path | None = None, context: str | None = None) -> ApiClientInfo:
    """In-cluster config when no kubeconfig is given and KUBERNETES_SERVICE_HOST is set;
    otherwise the kubeconfig (``--kubeconfig``, $KUBECONFIG or ~/.kube/config)."""
    cfg = client.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
            namespace = _pod_namespace()
        else:
            path = str(kubeconfig) if kubeconfig else None
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
            _, active = config.list_kube_config_contexts(config_file=path)
            if context:
                contexts, _ = config.list_kube_config_contexts(config_file=path)
                active = next(c for c in contexts if c["name"] == context)
            namespace = (active or {}).get("context", {}).get("namespace") or "default"
    except (ConfigException, OSError, StopIteration) as exc:
        where = str(kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config")
        raise KubeRejected(
            f"cannot load the Kubernetes configuration from {where}: {exc} "
            "(pass --kubeconfig, set KUBECONFIG, or run in a pod)"
        ) from exc
    cfg.connection_pool_maxsize = CONNECTION_POOL
    return ApiClientInfo(client.ApiClient(cfg), namespace, cfg.host)


def _pod_namespace() -> str:
    if env := os.environ.get("POD_NAMESPACE"):
        return env
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


@dataclass
class ApiClientInfo:
    api: Any  # kubernetes.client.ApiClient
    namespace: str  # the context's (or pod's) namespace: the default for verbs and Leases
    host: str


class KubeGateway:
    """Everything embrel asks of the Kubernetes API, in its own vocabulary."""

    def __init__(self, info: ApiClientInfo) -> None:
        self.info = info
        self.default_namespace = info.namespace
        self._custom = client.CustomObjectsApi(info.api)
        self._core = client.CoreV1Api(info.api)
        self._coordination = client.CoordinationV1Api(info.api)

    @classmethod
    def connect(cls, kubeconfig: Path | None = None, context: str | None = None) -> KubeGateway:
        return cls(load_api_client(kubeconfig, context))

    def close(self) -> None:
        self.info.api.close()

    def _plain(self, model: Any) -> dict[str, Any]:
        data: dict[str, Any] = self.info.api.sanitize_for_serialization(model)
        return data

    # -- EmbeddingReleases -----------------------------------------------------

    def list_releases(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """Every release (in ``namespace``, or in all), and the list's resourceVersion."""
        where = namespace or "all namespaces"
        try:
            with _translated(f"listing EmbeddingReleases in {where}"):
                if namespace:
                    out = self._custom.list_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL
                    )
                else:
                    out = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        except KubeNotFound as exc:
            raise KubeNotFound(
                f"{exc}; is the EmbeddingRelease CRD installed? "
                "(kubectl apply -f manifests/crd.yaml)"
            ) from exc
        return list(out.get("items", [])), str(out.get("metadata", {}).get("resourceVersion", ""))

    def watch_releases(
        self,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int,
        name: str | None = None,
    ) -> Iterator[WatchEvent]:
        """Changes after ``resource_version`` (with BOOKMARKs) until the server ends the watch;
        with ``name``, of that release only (a field selector).

        Raises KubeGone when ``resource_version`` has expired: list again.
        """
        where = namespace or "all namespaces"
        stream = watch.Watch()
        kwargs: dict[str, Any] = {
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            # With a timeout the client never retries on its own: 410 reaches us.
            "timeout_seconds": timeout_seconds,
            "_request_timeout": (10, timeout_seconds + 30),
        }
        if name is not None:
            kwargs["field_selector"] = f"metadata.name={name}"
        with _translated(f"watching EmbeddingReleases in {where}"):
            if namespace:
                events = stream.stream(
                    self._custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    **kwargs,
                )
            else:
                events = stream.stream(
                    self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs
                )
            try:
                for event in events:
                    yield WatchEvent(str(event["type"]), event["raw_object"])
            finally:
                stream.stop()

    def get_release(self, namespace: str, name: str) -> dict[str, Any]:
        with _translated(f"reading EmbeddingRelease {namespace}/{name}"):
            obj: dict[str, Any] = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        return obj

    def patch_release(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch; put ``metadata.resourceVersion`` in it to make it conditional."""
        with _translated(f"updating EmbeddingRelease {namespace}/{name}"):
            obj: dict[str, Any] = self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=MERGE_PATCH
            )
        return obj

    def replace_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT the status subresource; ``obj`` carries the resourceVersion it was read at."""
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        with _translated(f"writing the status of EmbeddingRelease {namespace}/{name}"):
            out: dict[str, Any] = self._custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, obj
            )
        return out

    # -- Events ----------------------------------------------------------------

    def create_event(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        with _translated(f"creating an Event in {namespace}"):
            return self._plain(self._core.create_namespaced_event(namespace, body))

    def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        with _translated(f"updating Event {namespace}/{name}"):
            return self._plain(self._core.patch_namespaced_event(name, namespace, patch))

    def list_events(self, namespace: str) -> list[dict[str, Any]]:
        with _translated(f"listing Events in {namespace}"):
            out = self._plain(self._core.list_namespaced_event(namespace))
        return list(out.get("items", []))

    # -- Leases ----------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with _translated(f"reading Lease {namespace}/{name}"):
                return self._plain(self._coordination.read_namespaced_lease(name, namespace))
        except KubeNotFound:
            return None

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """KubeConflict when another replica created it first."""
        with _translated(f"creating Lease {namespace}/{body['metadata']['name']}"):
            return self._plain(self._coordination.create_namespaced_lease(namespace, body))

    def replace_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT with the resourceVersion read: KubeConflict when another replica wrote first."""
        name = body["metadata"]["name"]
        with _translated(f"renewing Lease {namespace}/{name}"):
            return self._plain(self._coordination.replace_namespaced_lease(name, namespace, body))

    # -- Secrets ---------------------------------------------------------------

    def read_credentials(self, namespace: str, name: str) -> Credentials:
        """Milvus credentials from a Secret: key ``token``, or ``user`` (or ``username``)
        and ``password``. The values never appear in an error message or a log line."""
        where = f"Secret {namespace}/{name} (spec.milvus.secretRef)"
        try:
            with _translated(f"reading {where}"):
                secret = self._core.read_namespaced_secret(name, namespace)
        except KubeNotFound as exc:
            raise KubeNotFound(
                f"{where} does not exist; create it with the key token, or user and password"
            ) from exc
        data = {k: _decode(where, k, v) for k, v in (secret.data or {}).items()}
        token = data.get("token", "")
        user = data.get("user") or data.get("username", "")
        password = data.get("password", "")
        if not token and not (user and password):
            raise KubeRejected(
                f"{where} has neither the key token nor both user and password "
                f"(it has: {', '.join(sorted(data)) or 'no keys'})"
            )
        return Credentials(token, user, password)

    def read_secret_value(self, namespace: str, name: str, key: str, field: str) -> str:
        """One key of a Secret (``field`` names the spec field that refers to it, for the
        message). The value never appears in an error message or a log line."""
        data = self.read_secret_data(namespace, name, field, needs=f"the key {key}")
        if key not in data:
            raise KubeRejected(
                f"Secret {namespace}/{name} ({field}) has no key {key} "
                f"(it has: {', '.join(sorted(data)) or 'no keys'})"
            )
        return data[key]

    def read_secret_data(
        self, namespace: str, name: str, field: str, needs: str = "the keys it documents"
    ) -> dict[str, str]:
        """Every key of a Secret, decoded; the values never appear in a message."""
        where = f"Secret {namespace}/{name} ({field})"
        try:
            with _translated(f"reading {where}"):
                secret = self._core.read_namespaced_secret(name, namespace)
        except KubeNotFound as exc:
            raise KubeNotFound(f"{where} does not exist; create it with {needs}") from exc
        return {k: _decode(where, k, v) for k, v in (secret.data or {}).items()}


def _decode(where: str, key: str, value: str) -> str:
    try:
        return base64.b64decode(value).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise KubeRejected(f"{where}: key {key} is not base64-encoded UTF-8") from exc
