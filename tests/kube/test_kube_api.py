"""The API mock answers like kube-apiserver where kmock 0.8 alone does not.

One test per gap closed by tests/support/kube_api.py, each through the official
client, as the controller talks to it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client, watch

from tests.support.kube_api import KubeApiServer

G, V, P = "embrel.dev", "v1alpha1", "embeddingreleases"
MERGE = "application/merge-patch+json"


def release(name: str = "products", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "EmbeddingRelease",
        "metadata": {"name": name},
        "spec": {"alias": "products", "version": "v1", **spec},
        "status": {"phase": "Live"},  # refused on create: status has its own subresource
    }


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def patch(api: client.ApiClient, name: str, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = custom(api).patch_namespaced_custom_object(
        G, V, "test", P, name, body, _content_type=MERGE
    )
    return out


def get(api: client.ApiClient, name: str = "products") -> dict[str, Any]:
    out: dict[str, Any] = custom(api).get_namespaced_custom_object(G, V, "test", P, name)
    return out


def test_create_answers_201_with_the_server_set_fields(api: client.ApiClient) -> None:
    body, code, _ = custom(api).create_namespaced_custom_object_with_http_info(
        G, V, "test", P, release()
    )
    assert code == 201
    meta = body["metadata"]
    assert meta["namespace"] == "test"
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert "status" not in body
    with pytest.raises(client.ApiException) as exc:
        custom(api).create_namespaced_custom_object(G, V, "test", P, release())
    assert exc.value.status == 409


def test_resource_version_grows_and_generation_follows_the_spec_only(
    api: client.ApiClient,
) -> None:
    created = custom(api).create_namespaced_custom_object(G, V, "test", P, release())
    rv0 = int(created["metadata"]["resourceVersion"])

    annotated = patch(api, "products", {"metadata": {"annotations": {"a": "b"}}})
    assert int(annotated["metadata"]["resourceVersion"]) > rv0
    assert annotated["metadata"]["generation"] == 1

    changed = patch(api, "products", {"spec": {"version": "v2"}})
    assert changed["metadata"]["generation"] == 2
    assert int(changed["metadata"]["resourceVersion"]) > int(
        annotated["metadata"]["resourceVersion"]
    )

    changed["status"] = {"phase": "Building"}
    written = custom(api).replace_namespaced_custom_object_status(
        G, V, "test", P, "products", changed
    )
    assert written["status"] == {"phase": "Building"}
    assert written["metadata"]["generation"] == 2  # status is not the spec

    same = patch(api, "products", {"spec": {"version": "v2"}})  # changes nothing
    assert same["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]


def test_a_stale_resource_version_is_a_conflict(api: client.ApiClient) -> None:
    created = custom(api).create_namespaced_custom_object(G, V, "test", P, release())
    stale = created["metadata"]["resourceVersion"]
    patch(api, "products", {"metadata": {"annotations": {"by": "someone else"}}})

    with pytest.raises(client.ApiException) as exc:
        patch(api, "products", {"metadata": {"resourceVersion": stale}, "spec": {"version": "x"}})
    assert exc.value.status == 409
    created["status"] = {"phase": "Live"}
    with pytest.raises(client.ApiException) as exc:
        custom(api).replace_namespaced_custom_object_status(G, V, "test", P, "products", created)
    assert exc.value.status == 409
    with pytest.raises(client.ApiException) as exc:
        custom(api).replace_namespaced_custom_object(G, V, "test", P, "products", created)
    assert exc.value.status == 409
    current = get(api)
    assert current["spec"]["version"] == "v1"
    assert "status" not in current


def test_status_and_spec_are_written_through_their_own_endpoints(api: client.ApiClient) -> None:
    created = custom(api).create_namespaced_custom_object(G, V, "test", P, release())
    patched = patch(api, "products", {"status": {"phase": "Live"}})
    assert "status" not in patched  # the main resource ignores status
    created["spec"]["version"] = "sneaky"
    created["status"] = {"phase": "Building"}
    written = custom(api).replace_namespaced_custom_object_status(
        G, V, "test", P, "products", created
    )
    assert written["spec"]["version"] == "v1"  # the status subresource ignores the spec
    assert written["status"] == {"phase": "Building"}


def test_put_replaces_a_lease(api: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api)
    lease = leases.create_namespaced_lease(
        "test", {"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}
    )
    lease.spec.holder_identity = "b"
    renewed = leases.replace_namespaced_lease("l", "test", lease)
    assert renewed.spec.holder_identity == "b"
    assert int(renewed.metadata.resource_version) > int(lease.metadata.resource_version)
    with pytest.raises(client.ApiException) as exc:  # the old version again: conflict
        leases.replace_namespaced_lease("l", "test", lease)
    assert exc.value.status == 409


def test_namespaces_are_served(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "search"}})
    assert [n.metadata.name for n in core.list_namespace().items] == ["search"]
    assert core.read_namespace("search").metadata.uid


def test_watch_resumes_after_its_resource_version_without_replaying(
    api: client.ApiClient,
) -> None:
    custom(api).create_namespaced_custom_object(G, V, "test", P, release("old"))
    created = custom(api).create_namespaced_custom_object(G, V, "test", P, release("new"))
    since = created["metadata"]["resourceVersion"]
    patch(api, "new", {"spec": {"version": "v2"}})

    started = time.monotonic()
    events = list(
        watch.Watch().stream(
            custom(api).list_namespaced_custom_object,
            G,
            V,
            "test",
            P,
            resource_version=since,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        )
    )
    took = time.monotonic() - started
    changes = [(e["type"], e["raw_object"]["metadata"].get("name")) for e in events]
    assert ("MODIFIED", "new") in changes
    assert ("ADDED", "old") not in changes and ("ADDED", "new") not in changes
    assert 0.9 < took < 3.0  # timeoutSeconds honoured
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and int(bookmarks[-1]["raw_object"]["metadata"]["resourceVersion"]) > int(
        since
    )


def test_watch_without_a_resource_version_starts_with_the_current_objects(
    api: client.ApiClient,
) -> None:
    custom(api).create_namespaced_custom_object(G, V, "test", P, release("a"))
    events = list(
        watch.Watch().stream(
            custom(api).list_namespaced_custom_object, G, V, "test", P, timeout_seconds=1
        )
    )
    assert [(e["type"], e["raw_object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_an_expired_resource_version_answers_410(
    api: client.ApiClient, kube_api: KubeApiServer
) -> None:
    created = custom(api).create_namespaced_custom_object(G, V, "test", P, release())
    kube_api.expire_watches()
    with pytest.raises(client.ApiException) as exc:
        list(
            watch.Watch().stream(
                custom(api).list_namespaced_custom_object,
                G,
                V,
                "test",
                P,
                resource_version=created["metadata"]["resourceVersion"],
                timeout_seconds=1,
            )
        )
    assert exc.value.status == 410


def test_finalizers_hold_deletion_until_removed(api: client.ApiClient) -> None:
    custom(api).create_namespaced_custom_object(G, V, "test", P, release())
    patch(api, "products", {"metadata": {"finalizers": ["embrel.dev/finalizer"]}})
    custom(api).delete_namespaced_custom_object(G, V, "test", P, "products")
    held = get(api)
    assert held["metadata"]["deletionTimestamp"]
    patch(api, "products", {"metadata": {"finalizers": []}})
    with pytest.raises(client.ApiException) as exc:
        get(api)
    assert exc.value.status == 404
